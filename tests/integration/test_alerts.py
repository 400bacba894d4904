"""Alerts for failed checks (WARN and ERROR) and failed runs, delivered once to a webhook."""

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.assets.alerts import (
    Alerter,
    build_check_alert_sensor,
    build_run_failure_alert_sensor,
    run_pipelines,
)
from batch_inference_assets.spec import AlertSpec
from dagster_defs.definitions import build_definitions
from tests.conftest import DAY, OTHER_DAYS
from tests.servers import webhook_recorder


@pytest.fixture
def instance(tmp_path: Path) -> dg.DagsterInstance:
    # A real SQLite instance (one database per run), as `dagster dev` uses: cursors must work there.
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


def _strict_nulls(spec: PipelineSpec) -> PipelineSpec:
    """nps_score is ~8% null: a 1% limit fails the WARN check without failing the run."""
    return spec.model_copy(
        update={"checks": spec.checks.model_copy(update={"max_null_rate": 0.01})}
    )


def _run(
    spec: PipelineSpec, resources: dict[str, Any], instance: dg.DagsterInstance, day: str
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        build_pipeline(spec).assets, partition_key=day, resources=resources,
        instance=instance, raise_on_error=False,
    )  # fmt: skip


def test_failed_checks_alert_once_each(
    churn_spec: PipelineSpec, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    spec = _strict_nulls(churn_spec)
    sensor = build_check_alert_sensor([build_pipeline(spec)])
    with webhook_recorder() as (url, received):
        alerter = Alerter(webhook_url=url, ui_base_url="http://dagster.internal:3000")
        cursor = None

        def tick() -> int:
            nonlocal cursor
            ctx = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"alerter": alerter}
            )
            before = len(received)
            sensor(ctx)
            cursor = ctx.cursor
            return len(received) - before

        assert tick() == 0
        ok_run = _run(spec, resources, instance, DAY)
        assert ok_run.success  # a WARN check does not fail the run ...
        assert tick() == 1  # ... but it alerts
        warn = received[-1]
        assert warn["check"] == "null_rates_below_threshold" and warn["severity"] == "WARN"
        assert warn["pipeline"] == "churn" and warn["partition"] == DAY
        assert warn["asset"] == "churn/source_features" and "nps_score" in warn["message"]
        assert warn["run_url"] == f"http://dagster.internal:3000/runs/{ok_run.run_id}"
        assert warn["text"].startswith(f"[churn] {DAY}: check null_rates_below_threshold")
        assert tick() == 0  # exactly once

        with resources["warehouse"].connect() as con:  # duplicate ids: an ERROR, blocking check
            con.execute(
                "INSERT INTO raw.customer_features SELECT * FROM raw.customer_features "
                "WHERE snapshot_date = ? AND customer_id = 100001", [OTHER_DAYS[0]],
            )  # fmt: skip
        assert not _run(spec, resources, instance, OTHER_DAYS[0]).success
        assert tick() == 2  # ids_are_unique (ERROR) and the null-rate WARN of that day
        assert {(a["check"], a["severity"]) for a in received[-2:]} == {
            ("ids_are_unique", "ERROR"), ("null_rates_below_threshold", "WARN"),
        }  # fmt: skip
        assert tick() == 0
    # Each check result is recorded for its day: the check's page and history name it.
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(["churn", "source_features"]), "ids_are_unique"), limit=5
    )
    assert sorted((r.partition, r.status.value) for r in history) == [
        (OTHER_DAYS[0], "FAILED"), (DAY, "SUCCEEDED"),
    ]  # fmt: skip


def test_alerts_wait_for_an_unreachable_webhook_without_repeating(
    churn_spec: PipelineSpec, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    spec = _strict_nulls(churn_spec)
    sensor = build_check_alert_sensor([build_pipeline(spec)])
    down = Alerter(webhook_url="http://127.0.0.1:9/unreachable", timeout_seconds=2)
    first = dg.build_sensor_context(instance=instance, resources={"alerter": down})
    sensor(first)  # starts watching
    assert _run(spec, resources, instance, DAY).success
    ctx = dg.build_sensor_context(
        instance=instance, cursor=first.cursor, resources={"alerter": down}
    )
    result = sensor(ctx)
    assert "alert delivery failed after 0 alert(s)" in result.skip_message
    with webhook_recorder() as (url, received):
        ctx = dg.build_sensor_context(
            instance=instance, cursor=ctx.cursor, resources={"alerter": Alerter(webhook_url=url)}
        )
        sensor(ctx)
        assert [a["check"] for a in received] == ["null_rates_below_threshold"]


def test_failed_runs_alert_once(
    churn_spec: PipelineSpec, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    pipeline = build_pipeline(churn_spec)
    sensor = build_run_failure_alert_sensor([churn_spec.name])
    defs = dg.Definitions(assets=pipeline.assets, sensors=[sensor], resources=resources)
    repo = defs.get_repository_def()
    with webhook_recorder() as (url, received):
        alerter = Alerter(webhook_url=url)
        cursor = None

        def tick() -> None:
            nonlocal cursor
            ctx = dg.build_sensor_context(
                instance=instance,
                cursor=cursor,
                repository_def=repo,
                resources={"alerter": alerter},
            )
            result = sensor.evaluate_tick(ctx)
            cursor = result.cursor

        tick()  # the first tick only starts watching
        empty = churn_spec.model_copy(update={"start_date": churn_spec.start_date})
        bad = _run(empty, resources, instance, "2026-10-20")  # no source rows that day
        assert not bad.success
        tick()
        assert len(received) == 1
        alert = received[0]
        assert alert["kind"] == "run_failed" and alert["pipeline"] == "churn"
        assert alert["partition"] == "2026-10-20" and alert["run_id"] == bad.run_id
        assert alert["steps"] == ["churn__source_features"]
        assert "partition_is_not_empty failed" in alert["message"]
        tick()
        assert len(received) == 1  # exactly once


def test_a_run_is_ours_by_tag_asset_selection_or_steps() -> None:
    def run(**kwargs: Any) -> dg.DagsterRun:
        return dg.DagsterRun(job_name="__ASSET_JOB", run_id="r", **kwargs)

    known = ["churn", "demand"]
    assert run_pipelines(run(tags={"pipeline": "demand"}), [], known) == ["demand"]
    ui = run(asset_selection=frozenset({dg.AssetKey(["churn", "predictions"])}))
    assert run_pipelines(ui, [], known) == ["churn"]
    training = run(asset_selection=frozenset({dg.AssetKey(["churn_training", "candidate_model"])}))
    assert run_pipelines(training, [], known) == ["churn"]
    assert run_pipelines(run(), ["churn__source_features"], known) == ["churn"]
    # Another team's run in the same instance is not ours to alert on.
    other = run(asset_selection=frozenset({dg.AssetKey(["finance", "ledger"])}))
    assert run_pipelines(other, ["finance__close_books"], known) == []


@pytest.mark.parametrize("on_success", [True, False])
def test_a_published_partition_posts_a_summary_when_the_pipeline_asks(
    on_success: bool,
    churn_spec: PipelineSpec,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
) -> None:
    spec = churn_spec.model_copy(update={"alerts": AlertSpec(on_success=on_success)})
    defs = build_definitions(resources, specs=[spec])  # as the code location wires it
    sensor = defs.get_sensor_def("partition_summaries")
    pipeline = build_pipeline(spec)
    with webhook_recorder() as (url, received):
        alerter = Alerter(webhook_url=url)
        cursor = None

        def tick() -> None:
            nonlocal cursor
            ctx = dg.build_sensor_context(
                instance=instance, cursor=cursor, repository_def=defs.get_repository_def(),
                resources={"alerter": alerter},
            )  # fmt: skip
            cursor = sensor.evaluate_tick(ctx).cursor

        tick()  # the first tick only starts watching
        good = _run(spec, resources, instance, DAY)
        assert good.success
        # A run that publishes nothing (the model alone) sends nothing.
        model_only = dg.materialize(
            [a for a in pipeline.assets if a.key == dg.AssetKey(["churn", "model"])],
            partition_key=DAY, resources=resources, instance=instance,
        )  # fmt: skip
        assert model_only.success
        tick()
        tick()
    if not on_success:
        assert received == []
        return
    assert len(received) == 1, received  # once, for the run that published
    summary = received[0]
    published = good.asset_materializations_for_node("churn__predictions")[0].metadata
    assert summary["kind"] == "partition_published" and summary["run_id"] == good.run_id
    assert (summary["pipeline"], summary["partition"]) == ("churn", DAY)
    assert summary["rows"] == published["dagster/row_count"].value > 0
    assert summary["model_version"] == published["model_version"].value
    assert 0 < summary["positive_rate"] < 1 and 0.5 <= summary["mean_confidence"] <= 1
    assert f"published {summary['rows']:,} rows" in summary["text"]
    assert "positive rate" in summary["text"] and summary["run_url"].endswith(good.run_id)


def test_the_check_alert_sensor_starts_from_now_not_from_history(
    churn_spec: PipelineSpec, resources: dict[str, Any], instance: dg.DagsterInstance
) -> None:
    """A sensor turned on over an instance with failed checks (the demo's drift ERROR, say)
    alerts on the failures after it starts, not on every one before."""
    spec = _strict_nulls(churn_spec)  # every day fails the WARN null-rate check
    sensor = build_check_alert_sensor([build_pipeline(spec)])
    assert _run(spec, resources, instance, OTHER_DAYS[0]).success
    with webhook_recorder() as (url, received):
        alerter = Alerter(webhook_url=url)
        ctx = dg.build_sensor_context(instance=instance, resources={"alerter": alerter})
        sensor(ctx)
        assert received == []
        assert _run(spec, resources, instance, DAY).success
        ctx = dg.build_sensor_context(
            instance=instance, cursor=ctx.cursor, resources={"alerter": alerter}
        )
        sensor(ctx)
    assert [(a["check"], a["partition"]) for a in received] == [("null_rates_below_threshold", DAY)]
