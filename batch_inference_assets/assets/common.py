"""What every asset module shares: keys, the partition's day, failures that name the pipeline."""

from collections.abc import Sequence
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


# Stages that only read a published day (late labels come weeks later): a run of them alone
# never holds a day's scoring back.
READ_ONLY = frozenset({"realized_performance"})

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def run_pipelines(run: dg.DagsterRun, steps: Sequence[str], known: Sequence[str]) -> list[str]:
    """Which of our pipelines a run belongs to: from its `pipeline` tag (our jobs), its asset
    selection (UI and CLI materializations) or its steps; none for another team's run."""
    names = {run.tags.get("pipeline", "")}
    names |= {k.path[0].removesuffix("_training") for k in run.asset_selection or ()}
    names |= {s.split("__", 1)[0] for s in steps if "__" in s}
    return sorted(names & set(known))


def run_lineage(context: Context) -> tuple[str, ...]:
    """This run and the runs it re-executes (parent, grandparent, ...): the runs whose outputs
    it may reuse."""
    ids, run = [], context.dagster_run
    while run is not None:
        ids.append(run.run_id)
        run = context.instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    return tuple(ids)


def earlier_run_of_the_day(spec: PipelineSpec, context: Context) -> str | None:
    """Another run of this pipeline and partition, created before this one and still queued or
    in progress, however either was launched. The earlier run goes on; the later one stops, so
    one partition is never written by two runs at once."""
    instance, day_tag = context.instance, {"dagster/partition": context.partition_key}
    mine = instance.get_run_record_by_id(context.run_id)
    if mine is None:
        return None
    lineage = set(run_lineage(context))
    for record in instance.get_run_records(
        filters=dg.RunsFilter(statuses=ACTIVE_STATUSES, tags=day_tag)
    ):
        run = record.dagster_run
        if run.run_id in lineage or spec.name not in run_pipelines(run, [], [spec.name]):
            continue
        if run.asset_selection and all(k.path[-1] in READ_ONLY for k in run.asset_selection):
            continue  # it only reads what the day published
        if (record.create_timestamp, run.run_id) < (mine.create_timestamp, mine.dagster_run.run_id):
            return run.run_id
    return None


def stop_if_another_run_has_the_day(spec: PipelineSpec, context: Context, stage: str) -> None:
    other = earlier_run_of_the_day(spec, context)
    if other:
        raise fail(
            spec, context, stage,
            f"run {other} of this partition started first and is still queued or in "
            "progress; this run stops without publishing (run the day again once it is done)",
        )  # fmt: skip


def fail(
    spec: PipelineSpec, context: Context, stage: str, cause: str, retryable: bool = False
) -> PipelineFailure:
    return PipelineFailure(spec.name, context.partition_key, stage, cause, retryable)
