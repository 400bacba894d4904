"""The whole churn graph on the embedded default, in process."""

from typing import Any

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_inference_assets import PipelineSpec
from batch_inference_assets.assets import checks
from batch_inference_assets.models.lightgbm_model import LightGBMPredictor
from batch_inference_assets.models.matrix import feature_matrix
from tests.conftest import (
    DAY,
    OTHER_DAYS,
    OUTPUT_COLUMNS,
    SEED_CUSTOMERS,
    Materialize,
    check_results,
    read_downstream,
    read_table,
)

STABLE_COLUMNS = ["customer_id", "score", "label", "model_version", "partition_date"]


def test_one_partition_end_to_end(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    result = materialize(DAY)
    assert result.success
    table = read_table(resources)
    assert table.num_rows == SEED_CUSTOMERS
    assert pc.count_distinct(table.column("customer_id")).as_py() == SEED_CUSTOMERS
    assert set(table.column("run_id").to_pylist()) == {result.run_id}
    assert str(table.column("partition_date")[0].as_py()) == DAY
    assert all(check_results(result).values()), check_results(result)
    every = {
        *checks.SOURCE_CHECKS, *checks.prediction_checks(churn_spec), *checks.DRIFT_CHECKS,
        # the demo's challenger and late labels
        checks.CHALLENGER_SCORED_THE_SAME_ROWS, checks.REALIZED_PERFORMANCE_WITHIN_THRESHOLDS,
    }  # fmt: skip
    assert {name for _, name in check_results(result)} == every
    # A user's asset downstream of the predictions receives exactly the published rows.
    read = read_downstream(churn_spec, resources, DAY).sort_values("customer_id")
    assert read["customer_id"].tolist() == table.column("customer_id").to_pylist()
    assert read["score"].tolist() == table.column("score").to_pylist()

    # The scores are the model's own predictions of the exported features.
    model = result.output_for_node("churn__model")
    export = result.output_for_node("churn__source_features")
    features = pq.read_table([f.path for f in export.files])
    store = resources["model_store"]
    expected = LightGBMPredictor(store.read_model_text(model)).predict(
        feature_matrix(features, model.features)
    )
    by_id = dict(zip(features.column("customer_id").to_pylist(), expected, strict=True))
    got = dict(
        zip(table.column("customer_id").to_pylist(), table.column("score").to_pylist(), strict=True)
    )
    assert max(abs(got[k] - by_id[k]) for k in by_id) < 1e-12
    labels = table.column("label").to_numpy()
    assert (labels == (table.column("score").to_numpy() >= 0.5)).all()


def test_fan_out_writes_one_file_per_shard_and_balances(materialize: Materialize) -> None:
    result = materialize(DAY)
    manifest = result.output_for_node("churn__shard_manifest")
    scored = result.output_for_node("churn__scored_shards", "result")
    export = result.output_for_node("churn__source_features")
    groups = [g.rows for f in export.files for g in f.row_groups]
    # 8,000 rows at a 2,000-row target: 4 shards, unless DuckDB wrote fewer row groups.
    assert len(manifest.shards) == min(4, len(groups)) >= 2
    assert [s.index for s in scored.shards] == list(range(len(manifest.shards)))
    rows = [s.rows for s in scored.shards]
    assert sum(rows) == SEED_CUSTOMERS and max(rows) - min(rows) <= max(groups)
    assert all(
        p.endswith(f"scored/{DAY}/{result.run_id}/shard_{i:05d}.parquet")
        for i, p in enumerate(scored.paths)
    )
    score_steps = [
        e for e in result.all_events
        if e.is_successful_output and "score_shard[" in (e.step_key or "")
    ]  # fmt: skip
    assert len(score_steps) == len(manifest.shards)
    md = score_steps[0].event_specific_data.metadata
    assert {"rows", "seconds", "rows_per_second", "peak_rss_mb"} <= set(md)


def test_rematerializing_a_partition_gives_the_same_table(
    materialize: Materialize, resources: dict[str, Any]
) -> None:
    assert materialize(DAY).success
    first = read_table(resources).select(STABLE_COLUMNS)
    second_run = materialize(DAY)
    assert second_run.success
    second = read_table(resources)
    assert second.num_rows == SEED_CUSTOMERS  # replaced, not appended
    assert second.select(STABLE_COLUMNS).equals(first)
    assert set(second.column("run_id").to_pylist()) == {second_run.run_id}


def test_rerunning_one_partition_leaves_the_others_untouched(
    materialize: Materialize, resources: dict[str, Any]
) -> None:
    for day in (*OTHER_DAYS, DAY):
        assert materialize(day).success
    before = read_table(resources, "WHERE partition_date <> ?", (DAY,))
    assert before.num_rows == 2 * SEED_CUSTOMERS
    rerun = materialize(DAY)
    assert rerun.success
    assert read_table(resources, "WHERE partition_date <> ?", (DAY,)).equals(before)
    day_rows = read_table(resources, "WHERE partition_date = ?", (DAY,))
    assert set(day_rows.column("run_id").to_pylist()) == {rerun.run_id}


def test_standard_metadata_for_the_ui(materialize: Materialize) -> None:
    result = materialize(DAY)
    mats = {
        m.asset_key.path[-1]: m.metadata
        for m in result.asset_materializations_for_node("churn__predictions")
    }
    md = mats["predictions"]
    assert md["dagster/row_count"].value == SEED_CUSTOMERS
    assert md["dagster/table_name"].value == "churn_predictions"
    cols = [c.name for c in md["dagster/column_schema"].schema.columns]
    assert cols == OUTPUT_COLUMNS
    src = result.asset_materializations_for_node("churn__source_features")[0].metadata
    assert src["dagster/row_count"].value == SEED_CUSTOMERS
    assert "tenure" in [c.name for c in src["dagster/column_schema"].schema.columns]
    drift = result.asset_materializations_for_node("churn__drift_stats")[0].metadata
    assert isinstance(drift["psi/score"], dg.FloatMetadataValue)
    assert "psi/tenure" in drift


def test_drift_compares_with_the_previous_partition(materialize: Materialize) -> None:
    first = materialize(OTHER_DAYS[1])
    md_first = first.asset_materializations_for_node("churn__drift_stats")[0].metadata
    assert not any(k.startswith("psi_vs_previous/") for k in md_first)  # previous day not run
    second = materialize(DAY)
    md = second.asset_materializations_for_node("churn__drift_stats")[0].metadata
    assert md["previous_partition"].value == OTHER_DAYS[1]
    assert 0 <= md["psi_vs_previous/score"].value < 0.1


def test_append_mode_adds_rows_instead_of_replacing(
    materialize: Materialize, resources: dict[str, Any], churn_spec: Any
) -> None:
    spec = churn_spec.model_copy(
        update={"output": churn_spec.output.model_copy(update={"mode": "append"})}
    )
    first, second = materialize(DAY, spec), materialize(DAY, spec)
    assert first.success and second.success
    table = read_table(resources)
    assert table.num_rows == 2 * SEED_CUSTOMERS
    assert set(table.column("run_id").to_pylist()) == {first.run_id, second.run_id}


def test_drift_checks_warn_and_error_by_threshold(
    materialize: Materialize, resources: dict[str, Any]
) -> None:
    with resources["warehouse"].connect() as con:
        # Every customer's charges triple: a large shift in one feature, none in the others.
        con.execute(
            "UPDATE raw.customer_features SET monthly_charges = monthly_charges * 3 "
            "WHERE snapshot_date = ?",
            [DAY],
        )
    result = materialize(DAY)
    assert result.success  # drift alerts, it does not block publication
    evaluations = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    feature = evaluations["feature_drift_below_threshold"]
    assert not feature.passed and feature.severity == dg.AssetCheckSeverity.ERROR
    assert "monthly_charges" in feature.description
    drift = result.asset_materializations_for_node("churn__drift_stats")[0].metadata
    assert drift["psi/monthly_charges"].value > 0.25
    assert drift["psi/tenure"].value < 0.1
    # The drift page leads with a summary: the score, then the feature that moved most.
    summary = drift["summary"].value.splitlines()
    rows = [line for line in summary if line.startswith("| **")]
    assert rows[0].startswith("| **score** |")
    assert rows[1].startswith("| **monthly_charges** |") and "| ERROR |" in rows[1]
    assert read_table(resources).num_rows == SEED_CUSTOMERS
