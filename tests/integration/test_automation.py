"""Schedules and the landing sensor, evaluated through Dagster."""

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.assets.automation import (
    build_landing_sensor,
    build_schedule,
    build_training_schedule,
)

NOW = datetime(2026, 10, 17, 8, 0, tzinfo=UTC)  # the seeded data covers 10-01 .. 10-16


def _with_repository(
    spec: PipelineSpec, resources: dict[str, Any]
) -> tuple[dg.ScheduleDefinition, Any]:
    pipeline = build_pipeline(spec)
    schedule = build_schedule(pipeline)
    defs = dg.Definitions(
        assets=pipeline.assets, jobs=[pipeline.job], schedules=[schedule], resources=resources
    )
    return schedule, defs.get_repository_def()


def test_schedule_scores_the_previous_day(
    churn_spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    # The demo ships with its schedule off (its days are past); a pipeline turns it on.
    assert build_schedule(build_pipeline(churn_spec)).default_status == (
        dg.DefaultScheduleStatus.STOPPED
    )
    on = churn_spec.schedule.model_copy(update={"enabled": True})
    schedule, repo = _with_repository(churn_spec.model_copy(update={"schedule": on}), resources)
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    ctx = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 10, 16, 2, tzinfo=UTC), repository_def=repo
    )
    request = schedule.evaluate_tick(ctx).run_requests[0]
    assert request.partition_key == "2026-10-15" and request.tags["trigger"] == "schedule"
    early = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 10, 1, 2, tzinfo=UTC), repository_def=repo
    )
    assert schedule.evaluate_tick(early).skip_message


def test_the_retraining_schedule_trains_and_gates_a_candidate(
    churn_spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    pipeline = build_pipeline(churn_spec)
    schedule = build_training_schedule(pipeline)
    assert schedule is not None and schedule.cron_schedule == "0 4 * * 1"
    defs = dg.Definitions(
        assets=pipeline.all_assets, jobs=[pipeline.training_job], schedules=[schedule],
        resources=resources,
    )  # fmt: skip
    repo = defs.get_repository_def()
    tick = datetime(2026, 10, 15, 4, tzinfo=UTC)  # a Thursday, fine for a test
    ctx = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repo)
    request = schedule.evaluate_tick(ctx).run_requests[0]
    assert request.run_key == "churn:train:2026-10-15"
    # The request runs as is: the window ends on the tick's day, the gate decides.
    job = defs.resolve_job_def("churn_train")
    result = job.execute_in_process(run_config=request.run_config, raise_on_error=False)
    candidate = result.output_for_node("churn_training__candidate_model")
    assert candidate.window_end == "2026-10-15" and candidate.window_start == "2026-10-01"
    gate = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [e.event_specific_data.check_name for e in gate] == ["promotion_gate"]
    no_training = churn_spec.model_copy(update={"training": None})
    assert build_training_schedule(build_pipeline(no_training)) is None


def test_schedule_follows_the_spec(churn_spec: PipelineSpec, resources: dict[str, Any]) -> None:
    schedule_spec = churn_spec.schedule.model_copy(
        update={
            "cron": "30 6 * * 1-5",
            "timezone": "Europe/Paris",
            "days_back": 3,
            "enabled": False,
        }
    )
    spec = churn_spec.model_copy(update={"schedule": schedule_spec})
    schedule, repo = _with_repository(spec, resources)
    assert (
        schedule.cron_schedule == "30 6 * * 1-5" and schedule.execution_timezone == "Europe/Paris"
    )
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    tick = datetime(2026, 10, 19, 6, 30, tzinfo=UTC)
    ctx = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=repo)
    assert schedule.evaluate_tick(ctx).run_requests[0].partition_key == "2026-10-16"


class Landing:
    """Drives the landing sensor tick by tick, carrying its cursor like the daemon does."""

    def __init__(self, spec: PipelineSpec, resources: dict[str, Any]) -> None:
        self.now = NOW
        self.sensor = build_landing_sensor(build_pipeline(spec), clock=lambda: self.now)
        self.resources = {"warehouse": resources["warehouse"]}
        self.cursor: str | None = None

    def tick(self) -> list[str]:
        ctx = dg.build_sensor_context(cursor=self.cursor, resources=self.resources)
        assert self.sensor is not None
        results = list(self.sensor(ctx))
        self.cursor = ctx.cursor
        return [r.partition_key for r in results if isinstance(r, dg.RunRequest)]


def _days(*days: int) -> list[str]:
    return [date(2026, 10, d).isoformat() for d in days]


def _hold_back(resources: dict[str, Any], *days: str) -> None:
    """Move days' rows aside, as if they had not landed yet."""
    with resources["warehouse"].connect() as con:
        con.execute(
            "CREATE TABLE IF NOT EXISTS raw.pending AS SELECT * FROM raw.customer_features LIMIT 0"
        )
        for day in days:
            con.execute(
                "INSERT INTO raw.pending SELECT * FROM raw.customer_features "
                "WHERE snapshot_date = ?",
                [day],
            )
            con.execute("DELETE FROM raw.customer_features WHERE snapshot_date = ?", [day])


def _land(resources: dict[str, Any], *days: str) -> None:
    with resources["warehouse"].connect() as con:
        for day in days:
            con.execute(
                "INSERT INTO raw.customer_features SELECT * FROM raw.pending "
                "WHERE snapshot_date = ?",
                [day],
            )


def test_each_landed_day_fires_once(churn_spec: PipelineSpec, resources: dict[str, Any]) -> None:
    landing = Landing(churn_spec, resources)
    assert landing.tick() == _days(10, 11, 12, 13, 14, 15, 16)  # lookback 7 days
    assert landing.tick() == []
    assert json.loads(landing.cursor or "")["fired"] == _days(10, 11, 12, 13, 14, 15, 16)


def test_late_data_fires_when_it_lands(churn_spec: PipelineSpec, resources: dict[str, Any]) -> None:
    _hold_back(resources, "2026-10-14")
    landing = Landing(churn_spec, resources)
    assert landing.tick() == _days(10, 11, 12, 13, 15, 16)
    assert landing.tick() == []
    _land(resources, "2026-10-14")  # two days late
    assert landing.tick() == _days(14)
    assert landing.tick() == []


def test_two_days_landing_at_once(churn_spec: PipelineSpec, resources: dict[str, Any]) -> None:
    _hold_back(resources, "2026-10-15", "2026-10-16")
    landing = Landing(churn_spec, resources)
    assert landing.tick() == _days(10, 11, 12, 13, 14)
    _land(resources, "2026-10-15", "2026-10-16")
    assert landing.tick() == _days(15, 16)


def test_restart_keeps_the_cursor_and_the_window_moves(
    churn_spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    first = Landing(churn_spec, resources)
    first.tick()
    restarted = Landing(churn_spec, resources)  # a new daemon process, same stored cursor
    restarted.cursor = first.cursor
    assert restarted.tick() == []
    restarted.now = NOW + timedelta(days=1)  # 10-17 has no data yet; 10-10 left the window
    assert restarted.tick() == []
    assert json.loads(restarted.cursor or "")["fired"] == _days(11, 12, 13, 14, 15, 16)


def test_partial_landing_waits_for_min_rows(
    churn_spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    with resources["warehouse"].connect() as con:
        con.execute(
            "DELETE FROM raw.customer_features "
            "WHERE snapshot_date = '2026-10-16' AND customer_id > 100500"
        )
    assert "2026-10-16" not in Landing(churn_spec, resources).tick()  # 500 rows < min_rows 1000


def test_no_landing_spec_no_sensor(churn_spec: PipelineSpec) -> None:
    assert (
        build_landing_sensor(build_pipeline(churn_spec.model_copy(update={"landing": None})))
        is None
    )


@pytest.mark.parametrize("cron", ["every day", "61 2 * * *"])
def test_bad_cron_fails_at_load(churn_spec: PipelineSpec, cron: str) -> None:
    from batch_inference_assets import SpecError
    from batch_inference_assets.spec import parse_spec

    raw = churn_spec.model_dump(mode="json")
    raw["schedule"]["cron"] = cron
    with pytest.raises(SpecError, match=r"schedule.cron"):
        parse_spec(raw, source="churn.yaml")


def test_no_partition_or_scheduled_run_after_the_end_date(
    churn_spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    assert churn_spec.end_date is not None  # the demo data's last day
    pipeline = build_pipeline(churn_spec)
    keys = pipeline.partitions.get_partition_keys()
    assert keys[0] == churn_spec.start_date.isoformat()
    assert keys[-1] == churn_spec.end_date.isoformat()
    schedule, repo = _with_repository(churn_spec, resources)
    after = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 3, 2, tzinfo=UTC), repository_def=repo
    )
    assert "after the pipeline's end date 2026-10-31" in (
        schedule.evaluate_tick(after).skip_message or ""
    )
