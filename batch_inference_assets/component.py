"""BatchInferencePipeline: a pipeline declared in a `defs.yaml` as a Dagster component, and the
scaffolder behind `dg scaffold defs batch_inference_assets.BatchInferencePipeline <path>`."""

from datetime import date
from functools import cached_property
from pathlib import Path

import dagster as dg
from pydantic import BaseModel

from batch_inference_assets.assets.pipeline import Pipeline, build_pipeline
from batch_inference_assets.spec import PipelineSpec, resolve_sql_files

TEMPLATES = Path(__file__).parent / "templates"


class PipelineScaffolder(dg.Scaffolder):
    """Writes `defs.yaml` and `features.sql`, both commented, named after the target folder."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = request.target_path.name
        values = {"name": name, "start_date": date.today().isoformat()}
        request.target_path.mkdir(parents=True, exist_ok=True)
        for template, target in (
            ("defs.yaml.tmpl", "defs.yaml"),
            ("features.sql.tmpl", "features.sql"),
        ):
            text = (TEMPLATES / template).read_text().format(**values)
            (request.target_path / target).write_text(text)


@dg.scaffold_with(PipelineScaffolder)
class BatchInferencePipeline(dg.Component):
    """A daily batch-scoring pipeline: a SQL feature query + a model + an output table.

    Builds the assets `<name>/model`, `source_features`, `shard_manifest`, `scored_shards`,
    `predictions`, `drift_stats` (and `exports`, `top_k`, `<name>_training/*` when asked for),
    their checks, the jobs `<name>_daily` and `<name>_train`, the daily schedule, and the landing
    sensor. The YAML schema is PipelineSpec: its pydantic validators run when the YAML loads, so
    `dg check defs` reports a bad field with its file and line. (The component is not
    `dg.Resolvable`: that would claim the `model` key for `Resolvable.model()`.)
    """

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return PipelineSpec

    @classmethod
    def load(
        cls, attributes: BaseModel | None, context: dg.ComponentLoadContext
    ) -> "BatchInferencePipeline":
        assert isinstance(attributes, PipelineSpec)
        source = context.path / "defs.yaml"
        return cls(resolve_sql_files(attributes, source, ("attributes",)))

    @cached_property
    def pipeline(self) -> Pipeline:
        return build_pipeline(self.spec)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return self.pipeline.definitions()
