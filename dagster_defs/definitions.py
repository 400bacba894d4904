"""The code location `batch_inference`: every BatchInferencePipeline component in defs/, plus
what spans pipelines (alert sensors, retention), on the chosen deployment's resources."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from batch_inference_assets import BatchInferencePipeline, Pipeline, build_pipeline, load_specs
from batch_inference_assets.assets.alerts import (
    build_check_alert_sensor,
    build_run_failure_alert_sensor,
)
from batch_inference_assets.assets.retention import build_retention_job
from dagster_defs import defs as defs_folder
from dagster_defs.deployments import deployment_resources
from dagster_defs.executors import MULTIPROCESS, chosen_executor

PROJECT_ROOT = Path(__file__).parent.parent
PIPELINES_DIR = Path(defs_folder.__file__).parent / "pipelines"


def shared_definitions(
    pipelines: Sequence[Pipeline],
    resources: dict[str, Any],
    executor: dg.ExecutorDefinition | None,
) -> dg.Definitions:
    """What belongs to the code location rather than to one pipeline."""
    retention_job, retention_schedule = build_retention_job([p.spec.name for p in pipelines])
    return dg.Definitions(
        jobs=[retention_job],
        schedules=[retention_schedule],
        sensors=[
            build_check_alert_sensor(pipelines),
            build_run_failure_alert_sensor([p.spec.name for p in pipelines]),
        ],
        resources=resources,
        executor=executor,
    )


def build_definitions(
    resources: dict[str, Any],
    pipelines_dir: Path = PIPELINES_DIR,
    executor: dg.ExecutorDefinition | None = MULTIPROCESS,
    specs: list[Any] | None = None,
) -> dg.Definitions:
    """The code location from pipeline specs in any folder (`**/defs.yaml`), built the way
    the component builds them: for tests, benchmarks and a folder outside the project."""
    pipelines = [build_pipeline(s) for s in (load_specs(pipelines_dir) if specs is None else specs)]
    return dg.Definitions.merge(
        *(p.definitions() for p in pipelines), shared_definitions(pipelines, resources, executor)
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Read when Dagster loads the code location, never at import.
    root = Path(dg.EnvVar("BATCH_INFERENCE_ROOT").get_value(".data") or ".data").resolve()
    resources = deployment_resources(root)
    executor = chosen_executor()
    elsewhere = dg.EnvVar("BATCH_INFERENCE_PIPELINES_DIR").get_value()
    if elsewhere:
        return build_definitions(resources, Path(elsewhere), executor)
    tree = dg.ComponentTree.from_module(defs_module=defs_folder, project_root=PROJECT_ROOT)
    pipelines = [c.pipeline for c in tree.get_all_components(of_type=BatchInferencePipeline)]
    # The defs folder, not the tree's root: the root also imports every installed component
    # library for the UI's component catalogue (dagster-snowflake's alone takes ~3 s), and
    # every step process loads these definitions again.
    return dg.Definitions.merge(
        tree.build_defs(tree.defs_module_path),
        dg.Definitions(component_tree=tree),
        shared_definitions(pipelines, resources, executor),
    )
