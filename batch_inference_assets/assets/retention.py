"""Retention: delete intermediate Parquet (exports, scored shards) older than a TTL, and a
canceled run's as soon as it is canceled.

Only the object store's `<pipeline>/features/<day>/<run_id>/` and
`<pipeline>/scored/<day>/<run_id>/` folders are considered (and the sinks' run folders, for a
canceled run); published tables, records and drift profiles are never touched.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
from pydantic import Field
from upath import UPath

from batch_inference_assets.assets.alerts import run_pipelines
from batch_inference_assets.io.object_store import ObjectStore

INTERMEDIATE_STAGES = ("features", "scored")
# A run's own folders: what it exports, scores and streams to a sink (removed when it ends).
RUN_FOLDER_STAGES = (*INTERMEDIATE_STAGES, "redis_sink", "kafka_sink")


@dataclass(frozen=True)
class Expired:
    path: UPath
    age_days: float
    files: int
    in_day_folder: bool = True  # a run's folder inside its day's (not a whole day's)


def expired_folders(
    store: ObjectStore, pipelines: Sequence[str], ttl_days: float, now: float
) -> list[Expired]:
    """Run folders (`<p>/<stage>/<day>/<run_id>/`) whose newest file is older than `ttl_days`;
    a day folder of the older layout, with its files directly inside, counts as one."""
    out = []
    for pipeline in pipelines:
        for stage in INTERMEDIATE_STAGES:
            root = store.path(pipeline, stage)
            if not root.exists():
                continue
            for day in sorted(p for p in root.iterdir() if p.is_dir()):
                entries = list(day.iterdir())
                runs = [p for p in entries if p.is_dir()]
                loose = [f for f in entries if f.is_file()]
                for folder in [*sorted(runs, key=str), *([day] if loose else [])]:
                    files = [f for f in folder.iterdir() if f.is_file()]
                    newest = max((f.stat().st_mtime for f in files), default=0.0)
                    age = (now - newest) / 86400
                    if age > ttl_days and (folder != day or not runs):
                        out.append(Expired(folder, round(age, 2), len(files), folder != day))
    return out


class RetentionConfig(dg.Config):
    ttl_days: float = Field(default=7.0, gt=0, description="Keep intermediate files this long.")
    dry_run: bool = False


def build_retention_job(
    pipelines: Sequence[str], cron: str = "30 3 * * *"
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    @dg.op(name="delete_expired_intermediate_files")
    def cleanup(
        context: dg.OpExecutionContext, config: RetentionConfig, object_store: ObjectStore
    ) -> dg.Output[int]:
        expired = expired_folders(object_store, pipelines, config.ttl_days, time.time())
        for e in expired:
            context.log.info(
                f"{'would delete' if config.dry_run else 'deleting'} {e.path} "
                f"({e.files} files, {e.age_days} days old)"
            )
            if not config.dry_run:
                if e.in_day_folder:
                    object_store.remove_run_folder(e.path)
                else:
                    object_store.remove_tree(e.path)
        return dg.Output(
            len(expired),
            metadata={
                "folders": len(expired),
                "files": sum(e.files for e in expired),
                "dry_run": config.dry_run,
                "ttl_days": config.ttl_days,
            },
        )

    @dg.job(name="retention_cleanup", description="Deletes intermediate Parquet past its TTL.")
    def retention_cleanup() -> None:
        cleanup()

    schedule = dg.ScheduleDefinition(
        name="retention_cleanup_schedule",
        cron_schedule=cron,
        job=retention_cleanup,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return retention_cleanup, schedule


def run_folders(store: ObjectStore, pipeline: str, run_id: str) -> list[UPath]:
    """The folders `run_id` wrote under each day of `pipeline` (a run has one day, a range run
    several)."""
    found = []
    for stage in RUN_FOLDER_STAGES:
        root = store.path(pipeline, stage)
        if root.exists():
            found += [d / run_id for d in sorted(root.iterdir(), key=str) if (d / run_id).exists()]
    return found


def build_canceled_run_sensor(pipelines: Sequence[str]) -> dg.SensorDefinition:
    """Removes a canceled run's files: a terminated run publishes nothing, and nothing can use
    its shards (run the partition again; re-executing a canceled run from failure starts over
    from the export)."""

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.CANCELED,
        name="canceled_run_cleanup",
        monitor_all_code_locations=True,
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Deletes the exported and scored files of each canceled pipeline run.",
    )
    def sensor(context: dg.RunStatusSensorContext, object_store: ObjectStore) -> dg.SkipReason:
        run = context.dagster_run
        removed = []
        for pipeline in run_pipelines(run, [], pipelines):
            for folder in run_folders(object_store, pipeline, run.run_id):
                object_store.remove_run_folder(folder)
                removed.append(str(folder))
        if removed:
            context.log.info(f"canceled run {run.run_id}: removed {removed}")
        return dg.SkipReason(f"canceled run {run.run_id}: removed {len(removed)} folders")

    return sensor
