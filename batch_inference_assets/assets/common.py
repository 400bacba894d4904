"""What every asset module shares: keys, the partition's day, failures that name the pipeline."""

from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from batch_inference_assets.errors import PipelineFailure
from batch_inference_assets.spec import PipelineSpec

Context = dg.AssetExecutionContext | dg.OpExecutionContext
PREDICTIONS_IO_MANAGER = "predictions_io_manager"  # hands downstream assets the published rows
RECORDS_IO_MANAGER = "records_io_manager"  # the small JSON records passed between our steps


def key(spec: PipelineSpec, stage: str) -> dg.AssetKey:
    return dg.AssetKey([spec.name, stage])


def training_key(pipeline: str, stage: str) -> dg.AssetKey:
    """Training assets live under `<p>_training/`, apart from the daily `<p>/*` ones, so
    `key:<p>/*` still selects exactly one day's graph."""
    return dg.AssetKey([f"{pipeline}_training", stage])


def pool(spec: PipelineSpec) -> str:
    """The pipeline's concurrency pool. Every op of the pipeline is in it, and the instance
    counts pools per run (`concurrency.pools.granularity: run`), so its limit caps how many runs
    of the pipeline are in progress however they were launched (UI, backfill, schedule, sensor,
    re-execution). Set a pipeline's limit with `dagster instance concurrency set <pool> N`."""
    return f"batch_inference.{spec.name}"


def daily(spec: PipelineSpec, graph: bool = False) -> dict[str, Any]:
    """Group, partitions and pool of a pipeline's daily assets (a graph asset's pool is on
    its ops)."""
    found = {"group_name": spec.name, "partitions_def": partitions(spec)}
    return found if graph else {**found, "pool": pool(spec)}


def partitions(spec: PipelineSpec) -> dg.DailyPartitionsDefinition:
    end = spec.end_date + timedelta(days=1) if spec.end_date else None  # Dagster's is exclusive
    return dg.DailyPartitionsDefinition(
        start_date=spec.start_date.isoformat(),
        end_date=end.isoformat() if end else None,
        timezone=spec.timezone,
    )


def day(context: Context) -> date:
    return datetime.strptime(context.partition_key, "%Y-%m-%d").date()


def fail(
    spec: PipelineSpec, context: Context, stage: str, cause: str, retryable: bool = False
) -> PipelineFailure:
    return PipelineFailure(spec.name, context.partition_key, stage, cause, retryable)
