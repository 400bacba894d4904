"""`output.passthrough`: input columns carried into the published table beside the scores."""

from typing import Any

from batch_inference_assets import PipelineSpec
from batch_inference_assets.assets import checks
from batch_inference_assets.spec import OutputColumn
from tests.conftest import DAY, Materialize, check_results, failure_message, read_table


def with_passthrough(spec: PipelineSpec, columns: dict[str, str]) -> PipelineSpec:
    """The spec copying `columns` (name: type) instead of the demo's passthrough."""
    declared = [OutputColumn(name=n, type=t) for n, t in columns.items()]  # type: ignore[arg-type]
    kept = [c for c in spec.output.columns if c.name not in spec.output.passthrough]
    output = spec.output.model_copy(
        update={"passthrough": list(columns), "columns": [*kept, *declared]}
    )
    drift = spec.drift.model_copy(update={"segment_by": []})
    return spec.model_copy(update={"output": output, "drift": drift})


def test_passthrough_columns_are_published_beside_the_scores(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = with_passthrough(churn_spec, {"region": "string", "tenure": "float64"})
    result = materialize(DAY, spec)
    assert result.success, failure_message(result)
    table = read_table(resources)
    assert {"region", "tenure"} <= set(table.column_names)
    source = resources["warehouse"].query(
        "SELECT customer_id, region, tenure FROM raw.customer_features WHERE snapshot_date = ?",
        [DAY],
    )
    expected = {r["customer_id"]: (r["region"], float(r["tenure"])) for r in source.to_pylist()}
    got = {r["customer_id"]: (r["region"], r["tenure"]) for r in table.to_pylist()}
    assert got == expected
    assert len({r for r, _ in got.values()}) > 1  # really copied row by row, not one value


def test_a_passthrough_column_of_another_type_stops_the_run_before_scoring(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = with_passthrough(churn_spec, {"region": "int64"})
    result = materialize(DAY, spec)
    assert not result.success
    check = check_results(result)
    assert check[("source_features", checks.FEATURES_MATCH_MODEL)] is False
    message = failure_message(result)
    assert "churn" in message and DAY in message
    assert "passthrough column 'region' has type string, expected int64" in message
    assert "churn__scored_shards" not in {
        e.step_key for e in result.all_events if e.is_successful_output
    }
    assert read_table(resources).num_rows == 0  # nothing published
