"""The code location: every pipeline in pipelines/*.yaml on the chosen deployment's resources."""

from pathlib import Path
from typing import Any

import dagster as dg

from batch_inference_assets import PipelineSpec, build_pipeline, load_specs
from batch_inference_assets.alerts import (
    build_check_alert_sensor,
    build_run_failure_alert_sensor,
)
from batch_inference_assets.automation import (
    build_landing_sensor,
    build_schedule,
    build_training_schedule,
)
from batch_inference_assets.retention import build_retention_job
from dagster_defs.deployments import deployment_resources
from dagster_defs.executors import MULTIPROCESS, chosen_executor

PIPELINES_DIR = Path(__file__).parent / "pipelines"


def build_definitions(
    resources: dict[str, Any],
    pipelines_dir: Path = PIPELINES_DIR,
    executor: dg.ExecutorDefinition | None = MULTIPROCESS,
    specs: list[PipelineSpec] | None = None,
) -> dg.Definitions:
    specs = load_specs(pipelines_dir) if specs is None else specs
    pipelines = [build_pipeline(spec) for spec in specs]
    retention_job, retention_schedule = build_retention_job([p.spec.name for p in pipelines])
    landing_sensors = [s for s in (build_landing_sensor(p) for p in pipelines) if s is not None]
    retraining = [s for s in (build_training_schedule(p) for p in pipelines) if s is not None]
    return dg.Definitions(
        assets=[a for p in pipelines for a in p.all_assets],
        jobs=[*(j for p in pipelines for j in p.jobs), retention_job],
        schedules=[*(build_schedule(p) for p in pipelines), *retraining, retention_schedule],
        sensors=[
            *landing_sensors,
            build_check_alert_sensor(pipelines),
            build_run_failure_alert_sensor(),
        ],
        resources=resources,
        executor=executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Read when Dagster loads the code location, never at import.
    root = Path(dg.EnvVar("BATCH_INFERENCE_ROOT").get_value(".data") or ".data").resolve()
    pipelines_dir = Path(
        dg.EnvVar("BATCH_INFERENCE_PIPELINES_DIR").get_value(str(PIPELINES_DIR)) or PIPELINES_DIR
    )
    specs = load_specs(pipelines_dir)
    return build_definitions(
        deployment_resources(root), executor=chosen_executor(specs), specs=specs
    )
