"""Alerts: failed asset checks (any severity) and failed runs, posted once each to a webhook."""

import json
import logging
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from batch_inference_assets.assets.common import run_pipelines

if TYPE_CHECKING:
    from batch_inference_assets.assets.pipeline import Pipeline

logger = logging.getLogger("batch_inference.alerts")


class Alerter(dg.ConfigurableResource):
    """Posts JSON to a Slack-compatible webhook (if set) and always logs the alert."""

    webhook_url: str | None = Field(default=None, description="Incoming-webhook URL.")
    ui_base_url: str = Field(default="http://127.0.0.1:3000", description="For run links.")
    timeout_seconds: float = Field(default=10.0, gt=0)

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"

    def send(self, payload: dict[str, Any]) -> None:
        body = {"text": payload["summary"], **payload}
        logger.warning("alert: %s", json.dumps(body))
        if not self.webhook_url:
            return
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            if response.status >= 300:
                raise RuntimeError(f"webhook answered HTTP {response.status}")


def check_failure_payload(
    record: Any, alerter: Alerter, instance: dg.DagsterInstance
) -> dict[str, Any]:
    """The alert for one failed check execution record from Dagster's check history."""
    evaluation = record.event.dagster_event.event_specific_data if record.event else None
    key = record.key
    pipeline = key.asset_key.path[0]
    if record.partition is None:  # checks defined on the asset record the run's partition
        run = instance.get_run_by_id(record.run_id)
        partition = run.tags.get("dagster/partition") if run else None
    else:
        partition = record.partition
    severity = evaluation.severity.value if evaluation else "ERROR"
    message = (evaluation.description if evaluation else None) or "check failed"
    return {
        "kind": "asset_check_failed",
        "summary": (
            f"[{pipeline}] {partition or '-'}: check {key.name} on "
            f"{key.asset_key.to_user_string()} failed ({severity}): {message}"
        ),
        "pipeline": pipeline,
        "partition": partition,
        "asset": key.asset_key.to_user_string(),
        "check": key.name,
        "severity": severity,
        "message": message,
        "run_id": record.run_id,
        "run_url": alerter.run_url(record.run_id),
    }


def build_check_alert_sensor(
    pipelines: Sequence["Pipeline"], interval_seconds: int = 60
) -> dg.SensorDefinition:
    """Reads check history (WARN failures do not fail runs, so run sensors miss them).

    The cursor is the newest alerted record id per check; it advances after each delivered
    alert, so a webhook outage delays alerts without repeating the ones already sent.
    """
    check_keys = [k for p in pipelines for a in p.all_assets for k in a.check_keys]

    @dg.sensor(
        name="asset_check_failure_alerts",
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts once for every failed asset check, WARN or ERROR.",
    )
    def sensor(context: dg.SensorEvaluationContext, alerter: Alerter) -> dg.SkipReason:
        storage = context.instance.event_log_storage
        if context.cursor is None:  # the first tick starts from now, not from history
            start = {}
            for key in check_keys:
                newest = storage.get_asset_check_execution_history(key, limit=1)
                start[key.to_user_string()] = newest[0].id if newest else -1
            context.update_cursor(json.dumps(start, sort_keys=True))
            return dg.SkipReason("started watching: earlier check failures are not alerted")
        cursor: dict[str, int] = json.loads(context.cursor)
        sent = 0
        try:
            for key in check_keys:
                last = cursor.get(key.to_user_string(), -1)
                records = storage.get_asset_check_execution_history(key, limit=1000)
                failed = (r for r in records if r.id > last and r.status.value == "FAILED")
                for record in sorted(failed, key=lambda r: r.id):
                    alerter.send(check_failure_payload(record, alerter, context.instance))
                    sent += 1
                    cursor[key.to_user_string()] = record.id
        except OSError as err:
            # The webhook is down: keep the cursor of what was delivered (a raising tick would
            # drop it and repeat those alerts), say so loudly, and retry the rest next tick.
            context.log.error(f"alert delivery failed after {sent} alert(s), will retry: {err}")
            context.update_cursor(json.dumps(cursor, sort_keys=True))
            return dg.SkipReason(f"alert delivery failed after {sent} alert(s): {err}")
        context.update_cursor(json.dumps(cursor, sort_keys=True))
        return dg.SkipReason(f"sent {sent} alert(s)")

    return sensor


def step_failure_message(event: dg.DagsterEvent) -> str:
    """Our failures' own description (pipeline, partition, cause), else the error text."""
    data = event.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.message.strip() if data.error else "step failed"


def build_run_failure_alert_sensor(pipelines: Sequence[str]) -> dg.SensorDefinition:
    # Every code location of the instance: `dagster asset materialize -m` and `dg launch` runs
    # carry a location named after the module, not this one, and must alert too.
    @dg.run_failure_sensor(
        name="run_failure_alerts",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts once for every failed pipeline run, however it was launched.",
        monitor_all_code_locations=True,
    )
    def sensor(context: dg.RunFailureSensorContext, alerter: Alerter) -> None:
        run = context.dagster_run
        failures = context.get_step_failure_events()
        steps = [e.step_key for e in failures if e.step_key]
        ours = run_pipelines(run, steps, pipelines)
        if not ours:
            return
        message = (
            step_failure_message(failures[0])
            if failures
            else (context.failure_event.message or "run failed")
        )
        pipeline = ", ".join(ours)
        partition = run.tags.get("dagster/partition")
        alerter.send(
            {
                "kind": "run_failed",
                "summary": f"[{pipeline}] {partition or '-'}: run failed in {steps or 'run'}: "
                f"{message}",
                "pipeline": pipeline,
                "partition": partition,
                "steps": steps,
                "message": message,
                "run_id": run.run_id,
                "run_url": alerter.run_url(run.run_id),
            }
        )

    return sensor


def success_summary(
    run: dg.DagsterRun, published: dg.AssetMaterialization, instance: dg.DagsterInstance,
    alerter: Alerter,
) -> dict[str, Any]:  # fmt: skip
    """The summary of a run from its `<p>/predictions` materialization's metadata."""
    pipeline = published.asset_key.path[0]
    found: dict[str, Any] = {k: v.value for k, v in published.metadata.items()}
    stats = instance.get_run_stats(run.run_id)
    seconds = (stats.end_time or 0) - (stats.start_time or 0)
    partition = published.partition or run.tags.get("dagster/partition")
    balance = (
        f"positive rate {found['positive_rate']:.1%}"
        if "positive_rate" in found
        else f"mean score {found.get('mean_score', float('nan')):.4g}"
    )
    cost = next(((k, v) for k, v in found.items() if k.startswith("cost/estimated_")), None)
    price = f", est. {cost[1]:.4f} {cost[0].rsplit('_', 1)[1].upper()}" if cost else ""
    rows = int(found.get("dagster/row_count", 0))
    return {
        "kind": "partition_published",
        "summary": (
            f"[{pipeline}] {partition}: published {rows:,} rows with "
            f"{pipeline}@{found.get('model_version', '?')} in {seconds:.0f}s; {balance}, mean "
            f"confidence {found.get('mean_confidence', float('nan')):.3f}{price}"
        ),
        "pipeline": pipeline,
        "partition": partition,
        "rows": rows,
        "model_version": found.get("model_version"),
        "positive_rate": found.get("positive_rate"),
        "mean_score": found.get("mean_score"),
        "mean_confidence": found.get("mean_confidence"),
        "seconds": round(seconds, 1),
        "cost": cost[1] if cost else None,
        "run_id": run.run_id,
        "run_url": alerter.run_url(run.run_id),
    }


def build_success_summary_sensor(pipelines: Sequence[str]) -> dg.SensorDefinition:
    """`pipelines`: those whose YAML sets `alerts.on_success`."""

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="partition_summaries",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts a summary of each published partition of the pipelines with "
        "alerts.on_success, however the run was launched.",
        monitor_all_code_locations=True,
    )
    def sensor(context: dg.RunStatusSensorContext, alerter: Alerter) -> None:
        run = context.dagster_run
        wanted = {dg.AssetKey([p, "predictions"]) for p in pipelines}
        for event in context.instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ):
            published = event.asset_materialization
            if published and published.asset_key in wanted:  # a run that published a day
                alerter.send(success_summary(run, published, context.instance, alerter))

    return sensor
