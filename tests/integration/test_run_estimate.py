"""A run states its rows and expected duration before it scores, from recent runs' pace."""

from typing import Any

import dagster as dg

from batch_inference_assets import PipelineSpec, build_pipeline
from tests.conftest import DAY, OTHER_DAYS, SEED_CUSTOMERS


def manifest_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = [
        e for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["churn", "shard_manifest"])
    ]  # fmt: skip
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_estimate_comes_from_recent_runs_and_says_when_there_are_none(
    resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    assets = build_pipeline(churn_spec).assets
    with dg.DagsterInstance.ephemeral() as instance:

        def run(day: str) -> dg.ExecuteInProcessResult:
            result = dg.materialize(
                assets, partition_key=day, resources=resources, instance=instance
            )
            assert result.success
            return result

        first = run(DAY)
        md = manifest_metadata(first)
        assert md["estimate/rows"] == SEED_CUSTOMERS
        assert md["estimate/basis"] == "no history yet"
        assert "estimate/seconds" not in md
        tags = instance.get_run_by_id(first.run_id).tags
        assert tags["batch_inference/estimated_seconds"] == "no history yet"
        assert tags["batch_inference/rows"] == str(SEED_CUSTOMERS)

        second = run(OTHER_DAYS[0])
        # The pace the first run showed, from start to publication, computed here directly.
        [published] = instance.fetch_materializations(
            dg.AssetKey(["churn", "predictions"]), limit=5
        ).records[1:]  # the newest is the second run's own
        start = instance.get_run_record_by_id(first.run_id).start_time
        pace = SEED_CUSTOMERS / (published.timestamp - start)
        md = manifest_metadata(second)
        assert md["estimate/basis"] == "median of the last 1 published runs"
        assert abs(md["estimate/rows_per_second"] - pace) < 0.1
        assert abs(md["estimate/seconds"] - md["estimate/rows"] / pace) < 0.1
        assert (
            instance.get_run_by_id(second.run_id).tags["batch_inference/estimated_seconds"]
            == f"{md['estimate/rows'] / pace:.0f}"
        )
        logs = [
            e.message for e in instance.all_logs(second.run_id) if "estimated" in (e.message or "")
        ]
        assert any(f"{SEED_CUSTOMERS:,} rows in" in m and "rows/s" in m for m in logs), logs
