"""`explain:` reason codes through the whole graph: which rows are explained, and that their
named contributions are LightGBM's own and add up to each row's raw margin."""

from datetime import date
from typing import Any

import dagster as dg
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batch_inference_assets import PipelineSpec, build_pipeline, load_spec
from batch_inference_assets.assets.training import training_run_config
from batch_inference_assets.models import reasons
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.spec import ExplainSpec
from dagster_defs.definitions import PIPELINES_DIR
from dagster_defs.deployments import DEMO_OUTPUT_SCHEMA
from tests.conftest import (
    DAY,
    SEED_CUSTOMERS,
    Materialize,
    failure_message,
    read_table,
)

TOP_K = 3


def with_explain(spec: PipelineSpec, **fields: Any) -> PipelineSpec:
    return spec.model_copy(update={"explain": ExplainSpec(**fields)})


def explained(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_valid(table.column("reason_rest_contribution")))


def contribution_sum(table: pa.Table, top_k: int = TOP_K) -> np.ndarray:
    names = [f"reason_{i}_contribution" for i in range(1, top_k + 1)]
    return sum(
        (table.column(c).to_numpy() for c in names),
        table.column("reason_rest_contribution").to_numpy(),
    )


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


def model_contributions(
    result: dg.ExecuteInProcessResult, resources: dict[str, Any], pipeline: str, ids: list[str]
) -> dict[tuple[Any, ...], np.ndarray]:
    """Each id's contributions, straight from LightGBM on the model file and the export."""
    model = result.output_for_node(f"{pipeline}__model")
    export = result.output_for_node(f"{pipeline}__source_features")
    features = pq.read_table([f.path for f in export.files])
    booster = lgb.Booster(model_str=resources["model_store"].read_model_text(model))
    contrib = booster.predict(feature_matrix(features, model.features), pred_contrib=True)
    keys = zip(*(features.column(c).to_pylist() for c in ids), strict=True)
    return dict(zip(keys, contrib, strict=True))


def assert_reasons_are_the_models(
    table: pa.Table, expected: dict[tuple[Any, ...], np.ndarray], names: list[str], ids: list[str]
) -> None:
    """The named features are the largest |contribution| (ties: feature order), with their own
    values, and the rest is what the others and the bias add up to."""
    keys = list(zip(*(table.column(c).to_pylist() for c in ids), strict=True))
    contrib = np.stack([expected[k] for k in keys])
    order = np.argsort(-np.abs(contrib[:, :-1]), axis=1, kind="stable")[:, :TOP_K]
    for i in range(TOP_K):
        got = table.column(f"reason_{i + 1}").to_pylist()
        assert got == [names[j] for j in order[:, i]]
        np.testing.assert_allclose(
            table.column(f"reason_{i + 1}_contribution").to_numpy(),
            np.take_along_axis(contrib, order[:, i : i + 1], axis=1)[:, 0],
            rtol=0,
            atol=1e-12,
        )
    np.testing.assert_allclose(contribution_sum(table), contrib.sum(axis=1), rtol=0, atol=1e-9)


def test_every_row_gets_the_models_own_top_contributions_summing_to_its_margin(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = with_explain(churn_spec, top_k=TOP_K, rows="all")
    result = materialize(DAY, spec)
    assert result.success, failure_message(result)
    table = read_table(resources)
    assert table.column_names == spec.output_contract.names
    assert table.column_names[-(2 * TOP_K + 1) :] == reasons.column_names(TOP_K)
    assert table.num_rows == SEED_CUSTOMERS
    assert explained(table).num_rows == SEED_CUSTOMERS
    # Binary: the contributions add up to the log-odds of the published score.
    margin = logit(table.column("score").to_numpy())
    np.testing.assert_allclose(contribution_sum(table), margin, rtol=0, atol=1e-9)
    model = result.output_for_node("churn__model")
    names = [f.name for f in model.features]
    expected = model_contributions(result, resources, "churn", ["customer_id"])
    assert_reasons_are_the_models(table, expected, names, ["customer_id"])
    assert len(set(table.column("reason_1").to_pylist())) > 1  # really per row
    published = {
        m.asset_key.path[-1]: m.metadata
        for m in result.asset_materializations_for_node("churn__predictions")
    }["predictions"]
    schema = published["dagster/column_schema"]
    assert isinstance(schema, dg.TableSchemaMetadataValue)
    columns = {c.name: c.type for c in schema.schema.columns}
    assert columns["reason_1"] == "string" and columns["reason_rest_contribution"] == "float64"


def test_rows_top_k_explains_exactly_each_shards_highest_scores(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    count = 40
    result = materialize(DAY, with_explain(churn_spec, top_k=TOP_K, rows="top_k", row_count=count))
    assert result.success, failure_message(result)
    shards = result.output_for_node("churn__scored_shards").shards
    assert len(shards) > 1
    for shard in shards:
        scored = pq.read_table(shard.path)
        scores = scored.column("score").to_numpy()
        leaders = np.lexsort((np.arange(len(scores)), -scores))[:count]  # ties: the earlier row
        valid = scored.column("reason_1").is_valid().to_numpy(zero_copy_only=False)
        assert sorted(np.flatnonzero(valid).tolist()) == sorted(leaders.tolist()), shard.path
    table = read_table(resources)
    done = explained(table)
    assert done.num_rows == count * len(shards)
    top = table.sort_by([("score", "descending")]).slice(0, count)
    assert set(top.column("customer_id").to_pylist()) <= set(done.column("customer_id").to_pylist())
    unexplained = table.filter(pc.is_null(table.column("reason_rest_contribution")))
    assert unexplained.num_rows == table.num_rows - done.num_rows
    for name in reasons.column_names(TOP_K):
        assert unexplained.column(name).null_count == unexplained.num_rows
    np.testing.assert_allclose(
        contribution_sum(done), logit(done.column("score").to_numpy()), rtol=0, atol=1e-9
    )
    model = result.output_for_node("churn__model")
    expected = model_contributions(result, resources, "churn", ["customer_id"])
    assert_reasons_are_the_models(done, expected, [f.name for f in model.features], ["customer_id"])


def test_rows_sample_explains_about_the_rate_and_the_same_ids_again(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = with_explain(churn_spec, top_k=TOP_K, rows="sample", sample_rate=0.1)
    first = materialize(DAY, spec)
    assert first.success, failure_message(first)
    table = read_table(resources)
    ids = explained(table).column("customer_id").to_pylist()
    assert 0.07 * SEED_CUSTOMERS < len(ids) < 0.13 * SEED_CUSTOMERS
    chosen = reasons.sample_rows([table.column("customer_id")], 0.1)
    assert ids == table.column("customer_id").take(chosen).to_pylist()
    np.testing.assert_allclose(
        contribution_sum(explained(table)),
        logit(explained(table).column("score").to_numpy()),
        rtol=0,
        atol=1e-9,
    )
    again = materialize(DAY, spec)
    assert again.success, failure_message(again)
    rerun = read_table(resources)
    assert set(rerun.column("run_id").to_pylist()) == {again.run_id}
    assert explained(rerun).column("customer_id").to_pylist() == ids


def test_without_explain_there_are_no_reason_columns_and_turning_it_on_asks_for_a_migration(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    off = churn_spec.model_copy(update={"explain": None})
    result = materialize(DAY, off)
    assert result.success, failure_message(result)
    table = read_table(resources)
    assert table.column_names == [c.name for c in off.output.columns]
    assert not [c for c in table.column_names if c.startswith("reason_")]
    for shard in result.output_for_node("churn__scored_shards").shards:
        assert pq.read_schema(shard.path).names == table.column_names
    # The table exists without the reason columns: publishing them needs a migration first.
    on = materialize(DAY, with_explain(churn_spec, rows="sample", sample_rate=0.01))
    assert not on.success
    message = failure_message(on)
    assert "reason_1" in message and "migrate or rename the table" in message
    assert read_table(resources).equals(table)


def test_the_regression_pipeline_explains_its_prediction_exactly(
    resources: dict[str, Any],
) -> None:
    spec = with_explain(load_spec(PIPELINES_DIR / "demand" / "defs.yaml"), top_k=TOP_K)
    pipeline = build_pipeline(spec)
    trained = dg.materialize(
        pipeline.training_assets, resources=resources, raise_on_error=False,
        run_config=training_run_config("demand", date.fromisoformat(DAY)),
    )  # fmt: skip
    assert trained.success, failure_message(trained)
    result = dg.materialize(
        pipeline.assets, partition_key=DAY, resources=resources, raise_on_error=False
    )
    assert result.success, failure_message(result)
    table = resources["warehouse"].query(f"SELECT * FROM {DEMO_OUTPUT_SCHEMA}.demand_predictions")
    assert explained(table).num_rows == table.num_rows > 0
    # Regression: the contributions add up to the prediction itself.
    np.testing.assert_allclose(
        contribution_sum(table), table.column("score").to_numpy(), rtol=0, atol=1e-9
    )
    ids = spec.features.id_columns
    model = result.output_for_node("demand__model")
    expected = model_contributions(result, resources, "demand", ids)
    assert_reasons_are_the_models(table, expected, [f.name for f in model.features], ids)
