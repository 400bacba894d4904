"""Bad input: a clear error naming pipeline, partition and cause, and nothing published."""

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.utils import make_new_run_id

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.models.lightgbm_model import train_lightgbm
from tests.conftest import DAY, EMPTY_DAY, Materialize, check_results, failure_message, read_table


@pytest.fixture
def published(materialize: Materialize, resources: dict[str, Any]) -> pa.Table:
    """The table after a good run of DAY: what every failed run must leave exactly as it was."""
    assert materialize(DAY).success
    table = read_table(resources)
    assert table.num_rows > 0
    return table


def _with_sql(spec: PipelineSpec, old: str, new: str) -> PipelineSpec:
    assert old in spec.features.sql
    features = spec.features.model_copy(update={"sql": spec.features.sql.replace(old, new)})
    return spec.model_copy(update={"features": features})


def _assert_failed_cleanly(
    result: dg.ExecuteInProcessResult,
    resources: dict[str, Any],
    before: pa.Table,
    *causes: str,
    partition: str = DAY,
) -> str:
    assert not result.success
    message = failure_message(result)
    assert "pipeline 'churn'" in message and f"partition {partition}" in message, message
    for cause in causes:
        assert cause in message, message
    assert read_table(resources).equals(before)
    return message


def test_duplicate_ids(
    materialize: Materialize, resources: dict[str, Any], published: pa.Table
) -> None:
    with resources["warehouse"].connect() as con:
        con.execute(
            "INSERT INTO raw.customer_features SELECT * FROM raw.customer_features "
            "WHERE snapshot_date = ? AND customer_id IN (100001, 100002)",
            [DAY],
        )
    result = materialize(DAY)
    _assert_failed_cleanly(
        result, resources, published, "ids_are_unique failed", "2 ids occur more than once"
    )
    assert check_results(result)[("source_features", "ids_are_unique")] is False


def test_missing_feature_column(
    materialize: Materialize,
    resources: dict[str, Any],
    published: pa.Table,
    churn_spec: PipelineSpec,
) -> None:
    spec = _with_sql(churn_spec, "    nps_score,\n", "")
    result = materialize(DAY, spec)
    _assert_failed_cleanly(
        result,
        resources,
        published,
        "features_match_model_contract failed",
        "missing column 'nps_score'",
    )


def test_string_in_a_numeric_feature(
    materialize: Materialize,
    resources: dict[str, Any],
    published: pa.Table,
    churn_spec: PipelineSpec,
) -> None:
    spec = _with_sql(
        churn_spec,
        "    monthly_charges,\n",
        "    CASE WHEN customer_id = 100005 THEN 'n/a' ELSE CAST(monthly_charges AS VARCHAR) END"
        " AS monthly_charges,\n",
    )
    result = materialize(DAY, spec)
    _assert_failed_cleanly(
        result, resources, published, "column 'monthly_charges' has type string, expected float64"
    )


def test_empty_partition_is_a_clear_failure(
    materialize: Materialize, resources: dict[str, Any], published: pa.Table
) -> None:
    result = materialize(EMPTY_DAY)
    _assert_failed_cleanly(
        result, resources, published, "partition_is_not_empty failed (0 rows)", partition=EMPTY_DAY
    )


def test_sql_error(
    materialize: Materialize,
    resources: dict[str, Any],
    published: pa.Table,
    churn_spec: PipelineSpec,
) -> None:
    spec = _with_sql(churn_spec, "{schema}.customer_features", "{schema}.customer_featurez")
    result = materialize(DAY, spec)
    _assert_failed_cleanly(
        result, resources, published, "feature query failed", "customer_featurez"
    )


def _champion_dir(root: Path) -> Path:
    version = (root / "models" / "churn" / "aliases" / "champion").read_text()
    return root / "models" / "churn" / "versions" / version


def test_missing_model_file(
    materialize: Materialize, resources: dict[str, Any], published: pa.Table, root: Path
) -> None:
    (_champion_dir(root) / "model.txt").unlink()
    result = materialize(DAY)
    _assert_failed_cleanly(result, resources, published, "model:", "missing file")


def test_corrupt_model_file(
    materialize: Materialize, resources: dict[str, Any], published: pa.Table, root: Path
) -> None:
    model_file = _champion_dir(root) / "model.txt"
    model_file.write_text(model_file.read_text()[:5000])
    result = materialize(DAY)
    _assert_failed_cleanly(result, resources, published, "is corrupt")


def test_unknown_model_alias(
    materialize: Materialize,
    resources: dict[str, Any],
    published: pa.Table,
    churn_spec: PipelineSpec,
) -> None:
    spec = churn_spec.model_copy(
        update={"model": churn_spec.model.model_copy(update={"ref": "staging"})}
    )
    result = materialize(DAY, spec)
    _assert_failed_cleanly(result, resources, published, "no version or alias 'staging'")


def test_model_features_do_not_match_the_query(
    materialize: Materialize, resources: dict[str, Any], published: pa.Table
) -> None:
    rng = np.random.default_rng(0)
    n = 2_000
    frame = pa.table(
        {
            "tenure": rng.integers(0, 72, n),
            "loyalty_points": rng.normal(size=n),
            "y": rng.integers(0, 2, n),
        }
    )
    other = train_lightgbm(
        "lightgbm_binary", frame, frame, ["tenure", "loyalty_points"], "y", num_boost_round=5
    )
    resources["model_store"].save("churn", other)  # now the champion
    result = materialize(DAY)
    _assert_failed_cleanly(result, resources, published, "missing column 'loyalty_points'")


class PublishOnly:
    """Scores DAY up to the scored shards, then lets a test tamper and publish on its own."""

    def __init__(self, spec: PipelineSpec, resources: dict[str, Any]) -> None:
        self.pipeline = build_pipeline(spec)
        self.resources = resources
        predictions = dg.AssetSelection.assets(self.pipeline.key("predictions"))
        scoring = dg.materialize(
            self.pipeline.assets, selection=predictions.upstream(include_self=False),
            partition_key=DAY, resources=resources,
        )  # fmt: skip
        assert scoring.success
        folder = Path(resources["object_store"].root) / "churn" / "scored" / DAY
        self.scored = sorted((folder / scoring.run_id).glob("*.parquet"))  # this run's shards

    def publish(self) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.pipeline.assets,
            selection=dg.AssetSelection.assets(self.pipeline.key("predictions")),
            partition_key=DAY, resources=self.resources, raise_on_error=False,
        )  # fmt: skip


def test_failure_during_publication_rolls_back(
    resources: dict[str, Any], published: pa.Table, churn_spec: PipelineSpec
) -> None:
    run = PublishOnly(churn_spec, resources)
    scored = run.scored
    assert len(scored) >= 2
    # Shard 1 now repeats shard 0's rows: duplicate ids and extra rows, caught in the transaction.
    shutil.copy(scored[0], scored[1])
    result = run.publish()
    _assert_failed_cleanly(result, resources, published, "nothing published", "duplicated ids")
    checks = check_results(result)
    assert checks[("predictions", "ids_are_unique")] is False
    assert checks[("predictions", "row_count_matches_source")] is False
    # A missing shard file fails inside the transaction too.
    scored[1].unlink()
    result = run.publish()
    _assert_failed_cleanly(result, resources, published, "nothing published", "rolled back")


def test_scored_file_from_another_partition_is_rejected(
    resources: dict[str, Any], published: pa.Table, churn_spec: PipelineSpec
) -> None:
    run = PublishOnly(churn_spec, resources)
    shard = run.scored[0]
    t = pq.read_table(shard)
    i = t.schema.get_field_index("partition_date")
    t = t.set_column(
        i, t.schema.field(i), pa.repeat(pa.scalar(EMPTY_DAY).cast(pa.date32()), t.num_rows)
    )
    pq.write_table(t, shard)
    _assert_failed_cleanly(run.publish(), resources, published, "of another partition")


# Values that load without error but are wrong: each is caught where it enters.
BLOCKED_VALUES = {
    "all NaN": (
        "UPDATE raw.customer_features SET monthly_charges = 'NaN'::DOUBLE WHERE snapshot_date = ?",
        "features_are_populated failed", "monthly_charges=100.0%",
    ),
    "all null": (
        "UPDATE raw.customer_features SET nps_score = NULL WHERE snapshot_date = ?",
        "features_are_populated failed", "nps_score=100.0%",
    ),
    "infinity": (
        "UPDATE raw.customer_features SET total_charges = 'inf'::DOUBLE "
        "WHERE snapshot_date = ? AND customer_id IN (100001, 100002)",
        "feature_values_are_finite failed", "total_charges=2",
    ),
    "null id": (
        "UPDATE raw.customer_features SET customer_id = NULL "
        "WHERE snapshot_date = ? AND customer_id = 100003",
        "ids_are_not_null failed", "1 rows without an id",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BLOCKED_VALUES))
def test_bad_values_stop_at_source_features(
    case: str, materialize: Materialize, resources: dict[str, Any], published: pa.Table
) -> None:
    update, *causes = BLOCKED_VALUES[case]
    with resources["warehouse"].connect() as con:
        con.execute(update, [DAY])
    result = materialize(DAY)
    _assert_failed_cleanly(result, resources, published, "source_features", *causes)
    assert "churn__scored_shards" not in {  # stopped before any scoring
        e.step_key.split(".")[0] for e in result.all_events if e.is_step_start and e.step_key
    }


def test_nan_counts_as_missing_and_unseen_categories_warn(
    materialize: Materialize, resources: dict[str, Any]
) -> None:
    with resources["warehouse"].connect() as con:
        con.execute(  # NaN in 60% of one feature: over the 50% warning, under the block
            "UPDATE raw.customer_features SET monthly_charges = 'NaN'::DOUBLE "
            "WHERE snapshot_date = ? AND customer_id % 5 < 3",
            [DAY],
        )
        con.execute(
            "UPDATE raw.customer_features SET region = 'atlantis' "
            "WHERE snapshot_date = ? AND customer_id % 10 = 0",
            [DAY],
        )
    result = materialize(DAY)
    assert result.success, failure_message(result)  # warnings: the day is published
    checks = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == dg.AssetKey(["churn", "source_features"])
    }
    assert not checks["null_rates_below_threshold"].passed
    assert "monthly_charges=60.0%" in checks["null_rates_below_threshold"].description
    assert not checks["categories_are_known"].passed
    assert "region=10.0%" in checks["categories_are_known"].description
    assert checks["features_are_populated"].passed and checks["ids_are_not_null"].passed


@pytest.mark.parametrize("column", ["run_id", "model_version"])
def test_a_shard_file_that_is_not_the_manifests_is_refused(
    column: str, resources: dict[str, Any], published: pa.Table, churn_spec: PipelineSpec
) -> None:
    """A scored file rewritten at its path (another run of the day, another model version):
    the publication gate compares every row with the manifest and publishes nothing."""
    run = PublishOnly(churn_spec, resources)
    shard = run.scored[0]
    t = pq.read_table(shard)
    i = t.schema.get_field_index(column)
    pq.write_table(t.set_column(i, t.schema.field(i), pa.repeat("intruder", t.num_rows)), shard)
    result = run.publish()
    what = "scored by another run" if column == "run_id" else "by another model version"
    _assert_failed_cleanly(
        result, resources, published, "nothing published", f"{t.num_rows} rows {what}"
    )
    assert check_results(result)[("predictions", "scores_are_from_this_run")] is False


def test_a_second_run_of_a_day_in_progress_stops_before_writing(
    churn_spec: PipelineSpec, resources: dict[str, Any], tmp_path: Path
) -> None:
    """Two runs of one day never write it together: the one created later stops, however
    either was launched (here, an earlier UI run still in progress in the same instance)."""
    assets = build_pipeline(churn_spec).assets
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        assert dg.materialize(assets, partition_key=DAY, resources=resources, instance=instance)
        before = read_table(resources)
        earlier = instance.add_run(
            dg.DagsterRun(
                job_name="__ASSET_JOB", run_id=make_new_run_id(),
                status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": DAY},
                asset_selection=frozenset({dg.AssetKey(["churn", "predictions"])}),
            )
        )  # fmt: skip
        result = dg.materialize(
            assets, partition_key=DAY, resources=resources, instance=instance,
            raise_on_error=False,
        )  # fmt: skip
        message = _assert_failed_cleanly(result, resources, before, "source_features")
        assert f"run {earlier.run_id} of this partition started first" in message
        # A run of one asset that writes what the day shares (its exports) stops too.
        exports = dg.materialize(
            assets, selection=[dg.AssetKey(["churn", "exports"])], partition_key=DAY,
            resources=resources, instance=instance, raise_on_error=False,
        )  # fmt: skip
        message = _assert_failed_cleanly(exports, resources, before, "exports: run")
        assert f"run {earlier.run_id} of this partition started first" in message
        # Another day, or the same day once the earlier run has ended, runs as usual.
        instance.report_run_canceled(earlier)
        again = dg.materialize(assets, partition_key=DAY, resources=resources, instance=instance)
        assert again.success
        assert set(
            read_table(resources, "WHERE partition_date = ?", (DAY,))["run_id"].to_pylist()
        ) == {again.run_id}
