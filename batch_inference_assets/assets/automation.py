"""Automation per pipeline: a cron schedule for the previous day, a landing sensor, and a labels
sensor for realized performance."""

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg

from batch_inference_assets.assets.training import training_run_config
from batch_inference_assets.io.warehouse import Warehouse
from batch_inference_assets.sql import SqlTemplate
from batch_inference_assets.stages import performance

if TYPE_CHECKING:  # pipeline.py builds these; only the annotation is needed here
    from batch_inference_assets.assets.pipeline import Pipeline

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _status(enabled: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if enabled else dg.DefaultScheduleStatus.STOPPED


def build_schedule(pipeline: "Pipeline") -> dg.ScheduleDefinition:
    spec, sched = pipeline.spec, pipeline.spec.schedule

    @dg.schedule(
        name=f"{spec.name}_daily_schedule",
        cron_schedule=sched.cron,
        execution_timezone=sched.timezone,
        job=pipeline.job,
        default_status=_status(sched.enabled),
        description=f"Scores the day {sched.days_back} day(s) before each tick of '{sched.cron}'.",
    )
    def schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        tick = context.scheduled_execution_time.astimezone(ZoneInfo(sched.timezone))
        day = (tick - timedelta(days=sched.days_back)).date()
        if day < spec.start_date:
            return dg.SkipReason(f"{day} is before the pipeline's start date {spec.start_date}")
        if spec.past_end(day):
            return dg.SkipReason(f"{day} is after the pipeline's end date {spec.end_date}")
        return dg.RunRequest(
            run_key=f"{spec.name}:{day.isoformat()}",
            partition_key=day.isoformat(),
            tags={"trigger": "schedule"},
        )

    return schedule


def build_training_schedule(pipeline: "Pipeline") -> dg.ScheduleDefinition | None:
    """`<p>_train_schedule` when the training section has a schedule."""
    training = pipeline.spec.training
    if training is None or training.schedule is None or pipeline.training_job is None:
        return None
    name, sched = pipeline.spec.name, training.schedule

    @dg.schedule(
        name=f"{name}_train_schedule",
        cron_schedule=sched.cron,
        execution_timezone=sched.timezone,
        job=pipeline.training_job,
        default_status=_status(sched.enabled),
        description=f"Trains a candidate on the window ending on each tick of '{sched.cron}'; "
        "it becomes champion only through the promotion gate.",
    )
    def schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.astimezone(ZoneInfo(sched.timezone)).date()
        return dg.RunRequest(
            run_key=f"{name}:train:{day.isoformat()}",
            run_config=training_run_config(name, day),
            tags={"trigger": "schedule"},
        )

    return schedule


def landing_window(today: date, lookback_days: int, first: date) -> list[date]:
    """The days the sensor looks at: the last `lookback_days` complete days, oldest first."""
    days = [today - timedelta(days=n) for n in range(lookback_days, 0, -1)]
    return [d for d in days if d >= first]


def build_landing_sensor(
    pipeline: "Pipeline", clock: Clock = _utc_now
) -> dg.SensorDefinition | None:
    """Requests each day's run once its source rows exist; late days still fire once.

    The cursor holds the days already requested within the window, so a restart (or a
    re-deploy) fires nothing twice; run keys make Dagster deduplicate as well.
    """
    spec, landing = pipeline.spec, pipeline.spec.landing
    if landing is None:
        return None
    template = SqlTemplate.parse(landing.sql)
    tz = ZoneInfo(spec.timezone)

    @dg.sensor(
        name=f"{spec.name}_landing_sensor",
        job=pipeline.job,
        minimum_interval_seconds=landing.interval_seconds,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if landing.enabled else dg.DefaultSensorStatus.STOPPED
        ),
        description=f"Runs a day of {spec.name} when at least {landing.min_rows} rows landed.",
    )
    def sensor(
        context: dg.SensorEvaluationContext, warehouse: Warehouse
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        today = clock().astimezone(tz).date()
        window = landing_window(today, landing.lookback_days, spec.start_date)
        fired = set(json.loads(context.cursor or "{}").get("fired", []))
        requested = []
        for day in window:
            key = day.isoformat()
            if key in fired or spec.past_end(day):
                continue
            sql, params = template.render(
                schema=warehouse.feature_schema, values={"partition_date": day}
            )
            count = warehouse.query(sql, params).column(0)[0].as_py() or 0
            if count >= landing.min_rows:
                requested.append(key)
                yield dg.RunRequest(
                    run_key=f"{spec.name}:{key}",
                    partition_key=key,
                    tags={"trigger": "landing_sensor", "landed_rows": str(count)},
                )
        keep = {d.isoformat() for d in window}
        context.update_cursor(json.dumps({"fired": sorted((fired | set(requested)) & keep)}))
        if not requested:
            yield dg.SkipReason(f"no new day with {landing.min_rows}+ rows in {len(window)} days")

    return sensor


def labels_window(today: date, delay_days: int, lookback_days: int, first: date) -> list[date]:
    """The days the labels sensor looks at: the `lookback_days` days ending `delay_days` ago
    (labels take that long to land), oldest first."""
    last = today - timedelta(days=delay_days)
    days = [last - timedelta(days=n) for n in range(lookback_days - 1, -1, -1)]
    return [d for d in days if d >= first]


def build_labels_sensor(
    pipeline: "Pipeline", clock: Clock = _utc_now
) -> dg.SensorDefinition | None:
    """Requests `<p>/realized_performance` for each published day once its labels landed.

    Like the landing sensor: the cursor holds the days already requested within the window,
    and run keys make Dagster deduplicate as well.
    """
    spec, labels = pipeline.spec, pipeline.spec.labels
    if labels is None:
        return None
    target = pipeline.key("realized_performance")

    @dg.sensor(
        name=f"{spec.name}_labels_sensor",
        target=[target],
        minimum_interval_seconds=labels.interval_seconds,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if labels.enabled else dg.DefaultSensorStatus.STOPPED
        ),
        description=f"Measures a published day of {spec.name} against its labels once "
        f"{labels.min_rows} of them landed, looking {labels.delay_days} to "
        f"{labels.delay_days + labels.lookback_days - 1} days back.",
    )
    def sensor(
        context: dg.SensorEvaluationContext, warehouse: Warehouse
    ) -> Iterator[dg.RunRequest | dg.SkipReason]:
        today = clock().astimezone(ZoneInfo(spec.timezone)).date()
        window = labels_window(today, labels.delay_days, labels.lookback_days, spec.start_date)
        fired = set(json.loads(context.cursor or "{}").get("fired", []))
        todo = [d for d in window if d.isoformat() not in fired and not spec.past_end(d)]
        published = (
            performance.published_days(spec, warehouse, todo[0], todo[-1]) if todo else set()
        )
        requested = []
        for day in (d for d in todo if d in published):
            key = day.isoformat()
            time_window = pipeline.partitions.time_window_for_partition_key(key)
            count = performance.count_labels(
                spec, warehouse, day, (time_window.start, time_window.end)
            )
            if count >= labels.min_rows:
                requested.append(key)
                yield dg.RunRequest(
                    run_key=f"{spec.name}:labels:{key}",
                    partition_key=key,
                    asset_selection=[target],
                    tags={"trigger": "labels_sensor", "labelled_rows": str(count),
                          "pipeline": spec.name},
                )  # fmt: skip
        keep = {d.isoformat() for d in window}
        context.update_cursor(json.dumps({"fired": sorted((fired | set(requested)) & keep)}))
        if not requested:
            yield dg.SkipReason(
                f"no new published day with {labels.min_rows}+ labels in {len(window)} days"
            )

    return sensor
