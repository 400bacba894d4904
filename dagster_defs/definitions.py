"""The code location `batch_inference`: every BatchInferencePipeline component in defs/, plus
what spans pipelines (alert sensors, retention), on the chosen deployment's resources."""

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from batch_inference_assets import BatchInferencePipeline, Pipeline, build_pipeline, load_specs
from batch_inference_assets.assets.alerts import (
    build_check_alert_sensor,
    build_run_failure_alert_sensor,
    build_success_summary_sensor,
)
from batch_inference_assets.assets.common import pool
from batch_inference_assets.assets.retention import build_canceled_run_sensor, build_retention_job
from batch_inference_assets.assets.runs import build_pool_sensor, build_run_identity_sensor
from dagster_defs import defs as defs_folder
from dagster_defs.deployments import deployment_resources
from dagster_defs.executors import MULTIPROCESS, PreloadedDefinitions, chosen_executor

PROJECT_ROOT = Path(__file__).parent.parent
PIPELINES_DIR = Path(defs_folder.__file__).parent / "pipelines"
# What workspace.yaml, `[tool.dg.project] code_location_name` and the daemon call this location.
LOCATION_NAME = "batch_inference"
logger = logging.getLogger("batch_inference")


def shared_definitions(
    pipelines: Sequence[Pipeline],
    resources: dict[str, Any],
    executor: dg.ExecutorDefinition | None,
    location_name: str = LOCATION_NAME,
) -> dg.Definitions:
    """What belongs to the code location rather than to one pipeline."""
    retention_job, retention_schedule = build_retention_job([p.spec.name for p in pipelines])
    return dg.Definitions(
        jobs=[retention_job],
        schedules=[retention_schedule],
        sensors=[
            build_check_alert_sensor(pipelines),
            build_run_failure_alert_sensor([p.spec.name for p in pipelines]),
            build_success_summary_sensor(
                [p.spec.name for p in pipelines if p.spec.alerts.on_success]
            ),
            build_run_identity_sensor(
                {p.spec.name: p.spec.timeouts.run_seconds for p in pipelines}, location_name
            ),
            build_pool_sensor([pool(p.spec) for p in pipelines]),
            build_canceled_run_sensor([p.spec.name for p in pipelines]),
        ],
        resources=resources,
        executor=executor,
    )


def build_definitions(
    resources: dict[str, Any],
    pipelines_dir: Path = PIPELINES_DIR,
    executor: dg.ExecutorDefinition | None = MULTIPROCESS,
    specs: list[Any] | None = None,
    location_name: str = LOCATION_NAME,
) -> dg.Definitions:
    """The code location from pipeline specs in any folder (`**/defs.yaml`), built the way
    the component builds them: for tests, benchmarks and a folder outside the project."""
    pipelines = [build_pipeline(s) for s in (load_specs(pipelines_dir) if specs is None else specs)]
    return dg.Definitions.merge(
        *(p.definitions() for p in pipelines),
        shared_definitions(pipelines, resources, executor, location_name),
    )


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def unloaded_pipeline(folder: Path, error: BaseException) -> dg.Definitions:
    """What the UI shows in place of a pipeline whose files do not load: one asset in the
    pipeline's group whose description is the error (file, line, field). Its schedule and
    sensors are absent until the file is fixed; every other pipeline is unaffected."""
    name = folder.name
    where = folder.relative_to(PROJECT_ROOT) if folder.is_relative_to(PROJECT_ROOT) else folder
    text = str(_innermost(error)).replace(str(PROJECT_ROOT) + "/", "")
    logger.error("pipeline %s (%s) did not load; the others did:\n%s", name, where, text)
    return dg.Definitions(
        assets=[
            dg.AssetSpec(
                key=dg.AssetKey([name, "pipeline_not_loaded"]),
                group_name=name,
                description=(
                    f"Pipeline `{name}` did not load ({where}), so its assets, schedule and "
                    f"sensors are missing until it is fixed. `dg check defs` shows the same "
                    f"error:\n\n```\n{text}\n```"
                ),
                metadata={"folder": str(where), "error": dg.MetadataValue.md(f"```\n{text}\n```")},
                kinds={"error"},
            )
        ]
    )


def pipeline_definitions(tree: dg.ComponentTree) -> tuple[list[Pipeline], list[dg.Definitions]]:
    """Each pipeline folder built on its own, so one broken file never unloads the others.

    Under `dg check defs` / `dagster definitions validate` (DAGSTER_IS_DEFS_VALIDATION_CLI) a
    broken pipeline fails the check instead, so CI and the CLI report it with file and line.
    """
    strict = os.environ.get("DAGSTER_IS_DEFS_VALIDATION_CLI") == "1"
    pipelines, built = [], []
    for entry in sorted(tree.defs_module_path.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.name != "pipelines":
            built.append(tree.build_defs(entry))
            continue
        for folder in sorted(f for f in entry.iterdir() if (f / "defs.yaml").exists()):
            try:
                built.append(tree.build_defs(folder))
                pipelines.append(tree.load_component(folder, BatchInferencePipeline).pipeline)
            except Exception as error:
                if strict:
                    raise
                built.append(unloaded_pipeline(folder, error))
    return pipelines, built


def load_definitions() -> dg.Definitions:
    # Read when Dagster loads the code location, never at import.
    root = Path(dg.EnvVar("BATCH_INFERENCE_ROOT").get_value(".data") or ".data").resolve()
    resources = deployment_resources(root)
    executor = chosen_executor(preload="dagster_defs.step_definitions")
    elsewhere = dg.EnvVar("BATCH_INFERENCE_PIPELINES_DIR").get_value()
    if elsewhere:
        return build_definitions(resources, Path(elsewhere), executor)
    tree = dg.ComponentTree.from_module(defs_module=defs_folder, project_root=PROJECT_ROOT)
    # Folder by folder, not the tree's root: the root also imports every installed component
    # library for the UI's component catalogue (dagster-snowflake's alone takes ~3 s), and
    # every step process loads these definitions again.
    pipelines, built = pipeline_definitions(tree)
    return dg.Definitions.merge(
        *built,
        dg.Definitions(component_tree=tree),
        shared_definitions(pipelines, resources, executor),
    )


LOCATION = PreloadedDefinitions(load_definitions)


@dg.definitions
def defs() -> dg.Definitions:
    return LOCATION()
