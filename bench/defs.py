"""The benchmark's code location: the bench pipeline on a DuckDB file under BENCH_ROOT."""

import os
from pathlib import Path

import dagster as dg

from batch_inference_assets import load_specs
from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.models.store import ModelStore
from dagster_defs.definitions import build_definitions
from dagster_defs.deployments import role_resources
from dagster_defs.executors import PreloadedDefinitions, chosen_executor

PIPELINES = Path(__file__).parent / "pipelines"


def build() -> dg.Definitions:
    root = Path(os.environ.get("BENCH_ROOT", ".bench")).resolve()
    resources = role_resources(
        DuckDBWarehouse(
            database=str(root / "warehouse.duckdb"), schema_name="bench", output_schema="bench"
        ),
        LocalObjectStore(root=str(root / "object_store")),
        ModelStore(store=LocalObjectStore(root=str(root / "models"))),
    )
    specs = load_specs(PIPELINES)
    if os.environ.get("BENCH_SHARD_ROWS"):
        rows = int(os.environ["BENCH_SHARD_ROWS"])
        specs = [
            s.model_copy(
                update={
                    "sharding": s.sharding.model_copy(
                        update={"target_rows": rows, "max_parallel": 1024}
                    )
                }
            )
            for s in specs
        ]
    if os.environ.get("BENCH_COMPILED") == "1":
        specs = [
            s.model_copy(update={"model": s.model.model_copy(update={"predictor": "compiled"})})
            for s in specs
        ]
    return build_definitions(
        resources, specs=specs, executor=chosen_executor(preload="bench.step_definitions")
    )


# As the code location does: built once by the server the steps fork from (step_definitions).
BENCH = PreloadedDefinitions(build)


@dg.definitions
def defs() -> dg.Definitions:
    return BENCH()


def bench_job() -> dg.JobDefinition:
    return BENCH().resolve_job_def("bench_daily")
