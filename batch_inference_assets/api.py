"""Notebook and library use, without a Dagster instance or daemon running.

    from batch_inference_assets import api
    from dagster_defs.deployments import local_resources

    spec = api.load_pipeline("dagster_defs/defs/pipelines/churn/defs.yaml")
    store = local_resources(Path(".data"))["model_store"]
    scored = api.score_frame(spec, frame, store)             # a pandas DataFrame in, one out
    api.score_parquet(spec, "features.parquet", store, output="scores.parquet")
    result = api.run_partition(spec, "2026-10-15", local_resources(Path(".data")))

Scoring here goes through the same model resolution, contract check and kind-specific output
as the pipeline; it publishes nothing.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from batch_inference_assets.assets.checks import contract_problems
from batch_inference_assets.assets.pipeline import build_pipeline
from batch_inference_assets.models import kinds
from batch_inference_assets.models.frames import FrameColumns, FrameError
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.models.store import ModelStore
from batch_inference_assets.records import ModelHandle
from batch_inference_assets.spec import SCORE_COLUMN, PipelineSpec, load_spec

BATCH_ROWS = 65_536


def load_pipeline(spec: PipelineSpec | str | Path) -> PipelineSpec:
    return spec if isinstance(spec, PipelineSpec) else load_spec(spec)


class Scoring:
    """A pipeline's model, resolved once, scoring Arrow batches into the output's model columns."""

    def __init__(self, spec: PipelineSpec, model_store: ModelStore, ref: str | None = None):
        self.spec = spec
        self.model: ModelHandle = model_store.load(
            spec.model.name, ref or spec.model.ref, label_threshold=spec.model.label_threshold
        )
        problems = kinds.fit_problems(self.model, spec.model.kind, spec.model_output_columns)
        if problems:
            raise ValueError(f"pipeline {spec.name!r}: " + "; ".join(problems))
        predictor = kinds.load_predictor(self.model.kind, model_store.read_model_text(self.model))
        self.scorer = kinds.Scorer(
            self.model, predictor, spec.output_contract, spec.model_output_columns
        )
        returned = [*spec.features.id_columns, *spec.model_output_columns, "model_version"]
        self.result = FrameColumns([spec.output_contract[c] for c in returned])

    def check(self, schema: pa.Schema) -> None:
        problems = contract_problems(self.spec, self.model, schema)
        if problems:
            raise ValueError(
                f"pipeline {self.spec.name!r}, model {self.model.name}@{self.model.version}: "
                + "; ".join(problems)
            )

    def score_batch(self, batch: pa.RecordBatch) -> pa.Table:
        scored = self.scorer.score(batch, feature_matrix(batch, self.model.features))
        columns: dict[str, pa.Array] = {c: batch.column(c) for c in self.spec.features.id_columns}
        columns[SCORE_COLUMN] = pa.array(scored.score, type=pa.float64())
        columns.update(scored.columns)
        columns["model_version"] = pa.repeat(pa.scalar(self.model.version), batch.num_rows)
        order = [
            *self.spec.features.id_columns,
            *(c for c in self.spec.model_output_columns if c in columns),
            "model_version",
        ]
        return pa.table({c: columns[c] for c in order})

    def to_frame(self, scored: list[pa.Table]) -> pd.DataFrame:
        """The scored batches as one DataFrame, its columns checked against the output contract
        with dagster-pandas (an id column with nulls, say, where the table declares none)."""
        frame = pa.concat_tables(scored).to_pandas()
        try:
            self.result.validate(frame)
        except FrameError as err:
            raise ValueError(
                f"pipeline {self.spec.name!r}, model {self.model.name}@{self.model.version}, "
                f"scored frame: {err}"
            ) from err
        return frame


def _batches(table: pa.Table) -> Iterator[pa.RecordBatch]:
    yield from table.to_batches(max_chunksize=BATCH_ROWS)


def score_frame(
    spec: PipelineSpec | str | Path,
    data: pd.DataFrame | pa.Table,
    model_store: ModelStore,
    ref: str | None = None,
) -> pd.DataFrame:
    """Score rows with the pipeline's model (`ref`: an alias or version, default the spec's).

    Returns the id columns, the model's output columns (score, label, prob_<class> ...) and
    model_version. Rows missing a feature, or with a wrong type, raise ValueError."""
    scoring = Scoring(load_pipeline(spec), model_store, ref)
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    scoring.check(table.schema)
    if table.num_rows == 0:
        raise ValueError(f"pipeline {scoring.spec.name!r}: no rows to score")
    return scoring.to_frame([scoring.score_batch(b) for b in _batches(table)])


def score_parquet(
    spec: PipelineSpec | str | Path,
    path: str | Path,
    model_store: ModelStore,
    output: str | Path | None = None,
    ref: str | None = None,
) -> pd.DataFrame | Path:
    """Score a Parquet file batch by batch. With `output`, stream the scores into that Parquet
    file (bounded memory) and return its path; without, return them as a DataFrame."""
    scoring = Scoring(load_pipeline(spec), model_store, ref)
    source = pq.ParquetFile(str(path))
    scoring.check(source.schema_arrow)
    if output is None:
        return scoring.to_frame(
            [scoring.score_batch(b) for b in source.iter_batches(batch_size=BATCH_ROWS)]
        )
    writer: pq.ParquetWriter | None = None
    try:
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            scored = scoring.score_batch(batch)
            if writer is None:
                writer = pq.ParquetWriter(str(output), scored.schema)
            writer.write_table(scored)
    finally:
        if writer is not None:
            writer.close()
    return Path(output)


def run_partition(
    spec: PipelineSpec | str | Path,
    partition: str,
    resources: dict[str, Any],
    raise_on_error: bool = True,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "INFO",
) -> dg.ExecuteInProcessResult:
    """Run one partition of a pipeline end to end, in this process: every daily asset and
    check, publishing to `resources["warehouse"]` exactly as a scheduled run would.

    A failure raises (with the pipeline, partition and cause) unless `raise_on_error=False`.
    The run is recorded in `instance`, by default the one `DAGSTER_HOME` names (the UI's), so
    the table's `run_id` leads to it; without DAGSTER_HOME, in a temporary one. Dagster's own
    step events log at DEBUG, below the default `log_level`."""
    pipeline = build_pipeline(load_pipeline(spec))
    with contextlib.ExitStack() as stack:
        if instance is None and os.environ.get("DAGSTER_HOME"):  # read when called
            instance = stack.enter_context(dg.DagsterInstance.get())
        return dg.materialize(
            pipeline.assets,
            partition_key=partition,
            resources=resources,
            instance=instance,
            raise_on_error=raise_on_error,
            tags={"pipeline": pipeline.spec.name},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        )
