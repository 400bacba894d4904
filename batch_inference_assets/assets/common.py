"""What every asset module shares: keys, the partition's day, failures that name the pipeline."""

from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg

from batch_inference_assets.errors import PipelineFailure
from batch_inference_assets.spec import PipelineSpec

Context = dg.AssetExecutionContext | dg.OpExecutionContext
WAREHOUSE_POOL = "warehouse"  # bounds concurrent warehouse queries across runs (dagster.yaml)
PREDICTIONS_IO_MANAGER = "predictions_io_manager"  # hands downstream assets the published rows
RECORDS_IO_MANAGER = "records_io_manager"  # the small JSON records passed between our steps


def key(spec: PipelineSpec, stage: str) -> dg.AssetKey:
    return dg.AssetKey([spec.name, stage])


def training_key(pipeline: str, stage: str) -> dg.AssetKey:
    """Training assets live under `<p>_training/`, apart from the daily `<p>/*` ones, so
    `key:<p>/*` still selects exactly one day's graph."""
    return dg.AssetKey([f"{pipeline}_training", stage])


def daily(spec: PipelineSpec) -> dict[str, Any]:
    """Group and partitions of a pipeline's daily assets."""
    return {"group_name": spec.name, "partitions_def": partitions(spec)}


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
