"""What the code location exposes for the demo pipelines: a rename shows up here in review.
A pipeline you add beside them is checked by test_dg against its own YAML, not snapshotted."""

from pathlib import Path

import dagster as dg
import pytest

from dagster_defs import definitions

DEMO = ("churn", "demand")
SHARED = ("retention_cleanup", "retention_cleanup_schedule", "asset_check_failure_alerts",
          "run_failure_alerts", "partition_summaries", "run_identity",
          "pipeline_pools", "canceled_run_cleanup")  # fmt: skip


def _demo(names: list[str]) -> list[str]:
    """The demo pipelines' definitions and the code location's own, sorted."""
    prefixes = tuple(f"{p}{sep}" for p in DEMO for sep in ("/", "_"))
    return sorted(n for n in names if n in SHARED or n.startswith(prefixes))


@pytest.fixture
def defs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dg.Definitions:
    monkeypatch.setenv("BATCH_INFERENCE_ROOT", str(tmp_path))
    return definitions.defs()


def test_asset_keys_checks_and_jobs(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    daily = ["drift_stats", "exports", "model", "predictions", "scored_shards",
             "shard_manifest", "source_features", "top_k"]  # fmt: skip
    # The demo's churn also scores a challenger and measures late labels.
    churn_only = ["challenger_comparison", "realized_performance", "shadow_predictions"]
    training = ["candidate_model", "champion_model"]
    assert _demo([k.to_user_string() for k in graph.get_all_asset_keys()]) == sorted(
        [f"{p}/{s}" for p in ("churn", "demand") for s in daily]
        + [f"churn/{s}" for s in churn_only]
        + [f"{p}_training/{s}" for p in ("churn", "demand") for s in training]
    )
    checks = sorted(
        (k.asset_key.to_user_string(), k.name, graph.get_check_spec(k).blocking)
        for k in graph.asset_check_keys
        if k.asset_key.path[0] == "churn"
    )
    assert checks == [
        ("churn/challenger_comparison", "challenger_scored_the_same_rows", False),
        ("churn/drift_stats", "feature_drift_below_threshold", False),
        ("churn/drift_stats", "score_drift_below_threshold", False),
        ("churn/predictions", "ids_are_unique", True),
        ("churn/predictions", "mean_confidence_within_bounds", False),
        ("churn/predictions", "positive_rate_within_bounds", False),
        ("churn/predictions", "row_count_matches_source", True),
        ("churn/predictions", "scores_are_from_this_run", True),
        ("churn/predictions", "scores_are_not_null", True),
        ("churn/predictions", "scores_in_unit_interval", True),
        ("churn/realized_performance", "realized_performance_within_thresholds", False),
        ("churn/shadow_predictions", "ids_are_unique", True),
        ("churn/shadow_predictions", "row_count_matches_source", True),
        ("churn/shadow_predictions", "scores_are_from_this_run", True),
        ("churn/shadow_predictions", "scores_are_not_null", True),
        ("churn/shadow_predictions", "scores_in_unit_interval", True),
        ("churn/source_features", "categories_are_known", False),
        ("churn/source_features", "feature_values_are_finite", True),
        ("churn/source_features", "features_are_populated", True),
        ("churn/source_features", "features_match_model_contract", True),
        ("churn/source_features", "ids_are_not_null", True),
        ("churn/source_features", "ids_are_unique", True),
        ("churn/source_features", "null_rates_below_threshold", False),
        ("churn/source_features", "partition_is_not_empty", True),
        ("churn/source_features", "row_count_within_limit", True),
    ]
    # A regression has no [0, 1] gate and no classifier bounds; its mean score is bounded.
    demand = {
        k.name
        for k in graph.asset_check_keys
        if k.asset_key.to_user_string() == "demand/predictions"
    }
    assert demand == {
        "ids_are_unique", "mean_score_within_bounds", "row_count_matches_source",
        "scores_are_from_this_run", "scores_are_not_null",
    }  # fmt: skip
    promotion = [
        (k.asset_key.to_user_string(), k.name, graph.get_check_spec(k).blocking)
        for k in graph.asset_check_keys
        if k.asset_key.path[0].endswith("_training")
    ]
    assert sorted(p for p in promotion if p[0].startswith(tuple(f"{d}_" for d in DEMO))) == [
        ("churn_training/candidate_model", "promotion_gate", True),
        ("demand_training/candidate_model", "promotion_gate", True),
    ]
    jobs = [j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")]
    assert _demo(jobs) == [
        "churn_daily", "churn_train", "demand_daily", "demand_train", "retention_cleanup",
    ]  # fmt: skip
    assert _demo([s.name for s in defs.schedules or []]) == [
        "churn_daily_schedule", "churn_train_schedule", "demand_daily_schedule",
        "retention_cleanup_schedule",
    ]  # fmt: skip
    assert _demo([s.name for s in defs.sensors or []]) == [
        "asset_check_failure_alerts",
        "canceled_run_cleanup",
        "churn_labels_sensor",
        "churn_landing_sensor",
        "partition_summaries",
        "pipeline_pools",
        "run_failure_alerts",
        "run_identity",
    ]


def test_lineage_flows_one_way(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()

    def parents(stage: str) -> set[str]:
        node = graph.get(dg.AssetKey(["churn", stage]))
        return {k.path[-1] for k in node.parent_keys}

    assert parents("source_features") == {"model"}
    assert parents("shard_manifest") == {"source_features"}
    assert parents("scored_shards") == {"shard_manifest", "model"}
    assert parents("predictions") == {"scored_shards"}
    assert parents("drift_stats") == {"predictions", "scored_shards", "model", "source_features"}
    for stage in ("model", "source_features", "predictions"):
        assert graph.get(dg.AssetKey(["churn", stage])).group_name == "churn"
    partitions = graph.get(dg.AssetKey(["churn", "predictions"])).partitions_def
    assert isinstance(partitions, dg.DailyPartitionsDefinition)
    assert partitions.get_first_partition_key() == "2026-10-01"


def test_loading_definitions_reads_nothing_from_the_warehouse(
    defs: dg.Definitions, tmp_path: Path
) -> None:
    # The root does not even exist yet: loading must not touch storage.
    assert not any(tmp_path.iterdir())
