"""Challengers through Dagster: scored on exactly the champion's rows by the same shard steps,
published to <table>_shadow behind the gates, compared per partition."""

from typing import Any

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.models.lightgbm_model import LightGBMPredictor
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.spec import OutputColumn
from batch_inference_assets.stages import stats
from dagster_defs.deployments import DEMO_OUTPUT_SCHEMA
from tests.conftest import DAY, SEED_CUSTOMERS, Materialize, check_results, failure_message

SHADOW = f"{DEMO_OUTPUT_SCHEMA}.churn_predictions_shadow"
COMPARISON = dg.AssetKey(["churn", "challenger_comparison"])


def with_challenger(spec: PipelineSpec, segment: bool = False) -> PipelineSpec:
    """The spec scoring the seeded challenger (the demo does), segmented by region or not."""
    update: dict[str, Any] = {"challengers": ["challenger"]}
    if segment and "region" not in spec.output.passthrough:
        output = spec.output.model_copy(
            update={
                "passthrough": [*spec.output.passthrough, "region"],
                "columns": [*spec.output.columns, OutputColumn(name="region", type="string")],
            }
        )
        update["output"] = output
    segments = ["region"] if segment else []
    update["drift"] = spec.drift.model_copy(update={"segment_by": segments})
    return spec.model_copy(update=update)


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def rows(resources: dict[str, Any], table: str) -> dict[int, dict[str, Any]]:
    found = resources["warehouse"].query(f"SELECT * FROM {table} WHERE partition_date = ?", [DAY])
    return {r["customer_id"]: r for r in found.to_pylist()}


def average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def test_a_challenger_is_scored_on_the_champions_rows_and_compared(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = with_challenger(churn_spec, segment=True)
    result = materialize(DAY, spec)
    assert result.success, failure_message(result)
    model = result.output_for_node("churn__model")
    [challenger] = model.challengers
    assert challenger.ref == "challenger" and challenger.version != model.version

    champion = rows(resources, f"{DEMO_OUTPUT_SCHEMA}.churn_predictions")
    shadow = rows(resources, SHADOW)
    assert len(champion) == SEED_CUSTOMERS
    assert shadow.keys() == champion.keys()  # exactly the same ids
    assert {r["model_version"] for r in shadow.values()} == {challenger.version}
    assert {r["run_id"] for r in shadow.values()} == {result.run_id}
    assert all(shadow[i]["region"] == champion[i]["region"] for i in champion)

    # The shadow scores are the challenger model's own predictions of the exported features.
    export = result.output_for_node("churn__source_features")
    features = pq.read_table([f.path for f in export.files])
    store = resources["model_store"]
    expected = LightGBMPredictor(store.read_model_text(challenger)).predict(
        feature_matrix(features, challenger.features)
    )
    ids = features.column("customer_id").to_pylist()
    assert max(abs(shadow[i]["score"] - e) for i, e in zip(ids, expected, strict=True)) < 1e-12

    # The comparison, against a direct computation over the two tables.
    md = metadata(result, COMPARISON)
    order = sorted(champion)
    a = np.array([champion[i]["score"] for i in order])
    b = np.array([shadow[i]["score"] for i in order])
    spearman = np.corrcoef(average_ranks(a), average_ranks(b))[0, 1]
    assert abs(md["challenger/spearman"] - spearman) < 1e-6  # recorded to 6 places
    k = spec.exports.top_k.k if spec.exports.top_k else 1000
    top_a = {order[j] for j in np.lexsort((order, -a))[:k]}
    top_b = {order[j] for j in np.lexsort((order, -b))[:k]}
    assert md["challenger/top_k_overlap"] == round(len(top_a & top_b) / k, 6)
    flips = np.mean([champion[i]["label"] != shadow[i]["label"] for i in order])
    assert md["challenger/label_flip_rate"] == round(float(flips), 6)
    edges = model.reference[stats.SCORE_KEY].edges
    psi = stats.psi(stats.histogram(a, edges), stats.histogram(b, edges))
    assert abs(md["challenger/psi"] - psi) < 1e-6
    east = [i for i in order if champion[i]["region"] == "east"]
    east_flips = np.mean([champion[i]["label"] != shadow[i]["label"] for i in east])
    assert md["challenger/label_flip_rate/region=east"] == round(float(east_flips), 6)
    assert "| challenger |" in md["summary"] and "region=east" in md["summary"]
    checks = check_results(result)
    assert checks[("challenger_comparison", "challenger_scored_the_same_rows")] is True
    assert checks[("shadow_predictions", "ids_are_unique")] is True

    # Re-runnable: the day again replaces the shadow partition with the new run's rows.
    again = materialize(DAY, spec)
    assert again.success, failure_message(again)
    shadow = rows(resources, SHADOW)
    assert len(shadow) == SEED_CUSTOMERS
    assert {r["run_id"] for r in shadow.values()} == {again.run_id}


def test_without_challengers_there_is_no_shadow_asset(
    materialize: Materialize, churn_spec: PipelineSpec
) -> None:
    result = materialize(DAY, churn_spec.model_copy(update={"challengers": []}))
    assert result.success
    keys = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert "shadow_predictions" not in keys and "challenger_comparison" not in keys
    assert result.output_for_node("churn__model").challengers == []


def test_a_candidate_is_promoted_only_after_its_days_in_the_shadow(
    resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    from tests.integration.test_models_and_specs import train, with_training

    store = resources["model_store"]
    champion = store.resolve("churn", "champion")
    spec = with_training(
        with_challenger(churn_spec), num_boost_round=60, tolerance=1.0, shadow_days=2
    )
    with dg.DagsterInstance.ephemeral() as instance:
        first = train(spec, resources, instance)
        assert not first.success  # the gate holds it back: no day in the shadow yet
        candidate = first.output_for_node("churn_training__candidate_model")
        gate = next(
            e.event_specific_data
            for e in first.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        )
        assert "0 of the 2 days in the shadow" in gate.description
        assert store.resolve("churn", "champion") == champion
        assert store.resolve("churn", "challenger") == candidate.version  # now shadowed

        for day in ("2026-10-13", "2026-10-14"):
            scored = dg.materialize(
                build_pipeline(spec).assets, partition_key=day, resources=resources,
                instance=instance,
            )  # fmt: skip
            assert scored.success
            versions = scored.output_for_node("churn__model").challengers
            assert [c.version for c in versions] == [candidate.version]

        again = train(spec, resources, instance)  # the same window: the same version
        assert again.success, failure_message(again)
        assert again.output_for_node("churn_training__candidate_model").version == (
            candidate.version
        )
        assert store.resolve("churn", "champion") == candidate.version


def test_a_tampered_challenger_file_is_refused_and_the_shadow_table_kept(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    import pyarrow as pa

    spec = with_challenger(churn_spec)
    first = materialize(DAY, spec)
    assert first.success, failure_message(first)
    before = rows(resources, SHADOW)
    scored = first.output_for_node("churn__scored_shards")
    path = scored.challenger_paths()[0]
    table = pq.read_table(path)
    forged = table.set_column(
        table.schema.get_field_index("model_version"),
        "model_version",
        pa.array(["0123456789abcdef"] * table.num_rows),
    )
    pq.write_table(forged, path)

    again = dg.materialize(
        build_pipeline(spec).assets, selection=[dg.AssetKey(["churn", "shadow_predictions"])],
        partition_key=DAY, resources=resources, raise_on_error=False,
    )  # fmt: skip
    assert not again.success
    message = failure_message(again)
    assert "nothing published" in message and "by another model version" in message
    assert rows(resources, SHADOW) == before  # the partition stays as it was
