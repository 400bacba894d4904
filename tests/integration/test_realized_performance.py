"""`<p>/realized_performance` and `<p>_labels_sensor`, through Dagster: computed when the labels
land and not before, its values against a direct numpy computation, its check by thresholds."""

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from batch_inference_assets import PipelineSpec, build_pipeline, load_spec
from batch_inference_assets.assets import checks
from batch_inference_assets.assets.automation import build_labels_sensor, labels_window
from batch_inference_assets.spec import LabelsSpec, OutputColumn
from dagster_defs.definitions import PIPELINES_DIR
from dagster_defs.deployments import DEMO_OUTPUT_SCHEMA, local_resources
from tests.conftest import DAY, failure_message, read_table
from tests.unit.test_performance_metrics import ece, log_loss, rank_auc

OTHER_DAY = "2026-10-14"
# A week after the seeded days: with delay_days 7 the window ends on 10-16.
NOW = datetime(2026, 10, 23, 8, 0, tzinfo=UTC)
STAGE = "realized_performance"


def labelled_spec(spec: PipelineSpec, **thresholds: Any) -> PipelineSpec:
    """Churn with its labels.sql, and region carried through as a segment."""
    labels = LabelsSpec(
        sql=(PIPELINES_DIR / "churn" / "labels.sql").read_text(),
        delay_days=7, min_rows=1000, lookback_days=14, **thresholds,
    )  # fmt: skip
    kept = [c for c in spec.output.columns if c.name != "region"]  # the demo carries it already
    output = spec.output.model_copy(
        update={
            "passthrough": ["region"],
            "columns": [*kept, OutputColumn(name="region", type="string")],
        }
    )
    drift = spec.drift.model_copy(update={"segment_by": ["region"]})
    return spec.model_copy(update={"labels": labels, "output": output, "drift": drift})


@pytest.fixture(scope="module")
def published_template(
    seeded_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The seeded warehouse with two churn days published by the `churn_daily` job."""
    root = tmp_path_factory.mktemp("performance") / "data"
    shutil.copytree(seeded_template, root)
    spec = labelled_spec(load_spec(PIPELINES_DIR / "churn" / "defs.yaml"))
    defs = dg.Definitions.merge(
        build_pipeline(spec).definitions(), dg.Definitions(resources=local_resources(root))
    )
    job = defs.resolve_job_def("churn_daily")
    with dg.instance_for_test() as instance:
        for day in (OTHER_DAY, DAY):
            result = job.execute_in_process(partition_key=day, instance=instance)
            assert result.success
            events = result.get_asset_materialization_events()
            ran = {e.asset_key.to_user_string() for e in events if e.asset_key}
            assert "churn/predictions" in ran and f"churn/{STAGE}" not in ran  # not the daily job's
    yield root


@pytest.fixture
def resources(published_template: Path, tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "data"
    shutil.copytree(published_template, root)
    return local_resources(root)


@pytest.fixture
def spec(churn_spec: PipelineSpec) -> PipelineSpec:
    return labelled_spec(churn_spec)


def measure(
    spec: PipelineSpec, resources: dict[str, Any], day: str = DAY
) -> dg.ExecuteInProcessResult:
    pipeline = build_pipeline(spec)
    return dg.materialize(
        pipeline.assets, selection=[pipeline.key(STAGE)], partition_key=day,
        resources=resources, raise_on_error=False,
    )  # fmt: skip


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _check(result: dg.ExecuteInProcessResult) -> Any:
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return evaluation


def _published_with_outcomes(resources: dict[str, Any], day: str) -> pa.Table:
    rows = read_table(resources, "WHERE partition_date = ?", (day,))
    outcomes = resources["warehouse"].query(
        "SELECT customer_id, churned FROM raw.churn_outcomes WHERE snapshot_date = ?", [day]
    )
    return rows.join(outcomes, "customer_id").sort_by("customer_id")


def test_realized_performance_matches_a_direct_computation(
    spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    result = measure(spec, resources)
    assert result.success, failure_message(result)
    meta = _metadata(result)
    joined = _published_with_outcomes(resources, DAY)
    y = joined.column("churned").to_numpy()
    p = joined.column("score").to_numpy()
    assert meta["labelled_rows"] == meta["published_rows"] == len(y) == 8_000
    assert meta["coverage"] == 1.0
    assert meta["auc"] == pytest.approx(rank_auc(y, p), abs=1e-9)
    assert 0.7 < meta["auc"] < 0.95  # the seeded model really ranks churners first
    assert meta["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert meta["calibration_error"] == pytest.approx(ece(y, p), abs=1e-9)
    east = np.asarray(joined.column("region").to_pylist()) == "east"
    assert meta["auc/region=east"] == pytest.approx(rank_auc(y[east], p[east]), abs=1e-9)
    regions = {k for k in meta if k.startswith("auc/region=")}
    assert regions == {
        f"auc/region={r}" for r in ("central", "east", "islands", "north", "south", "west")
    }
    # The demo's challenger, measured on its own rows of the shadow table.
    [challenger] = [k for k in meta if k.startswith("auc/model_version=")]
    assert 0.7 < meta[challenger] < 0.95
    assert "| 0.0-0.1 |" in meta["reliability"] and "observed rate" in meta["reliability"]
    check = _check(result)
    assert check.passed and check.description == "no thresholds set in labels"


def test_the_check_compares_the_thresholds_that_are_set(
    churn_spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    strict = measure(labelled_spec(churn_spec, min_auc=0.99, max_log_loss=5.0), resources)
    assert strict.success, failure_message(strict)  # WARN: the run still succeeds
    check = _check(strict)
    assert check.check_name == checks.REALIZED_PERFORMANCE_WITHIN_THRESHOLDS
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "(want >= 0.99): FAIL" in check.description and "log_loss" in check.description
    loose = measure(labelled_spec(churn_spec, min_auc=0.6, max_calibration_error=0.2), resources)
    check = _check(loose)
    assert check.passed
    assert check.description.startswith("auc ") and "calibration_error" in check.description


class Labels:
    """Drives the labels sensor tick by tick, carrying its cursor like the daemon does."""

    def __init__(self, spec: PipelineSpec, resources: dict[str, Any]) -> None:
        sensor = build_labels_sensor(build_pipeline(spec), clock=lambda: NOW)
        assert sensor is not None
        self.sensor = sensor
        self.resources = {"warehouse": resources["warehouse"]}
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None
        self.requests: list[dg.RunRequest] = []

    def tick(self) -> list[str]:
        ctx = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        )
        results = list(cast(Iterator[Any], self.sensor(ctx)))
        self.cursor = ctx.cursor
        self.requests = [r for r in results if isinstance(r, dg.RunRequest)]
        return [str(r.partition_key) for r in self.requests]


def test_the_window_ends_delay_days_ago() -> None:
    first = date(2026, 10, 1)
    window = labels_window(NOW.date(), delay_days=7, lookback_days=14, first=first)
    assert (window[0], window[-1], len(window)) == (date(2026, 10, 3), date(2026, 10, 16), 14)
    assert labels_window(date(2026, 10, 9), 7, 14, first) == [first, date(2026, 10, 2)]


def _hold_back_outcomes(resources: dict[str, Any], day: str) -> None:
    with resources["warehouse"].connect() as con:
        con.execute(
            "CREATE TABLE raw.pending_outcomes AS SELECT * FROM raw.churn_outcomes "
            "WHERE snapshot_date = ?",
            [day],
        )
        con.execute("DELETE FROM raw.churn_outcomes WHERE snapshot_date = ?", [day])


def _land_outcomes(resources: dict[str, Any]) -> None:
    with resources["warehouse"].connect() as con:
        con.execute("INSERT INTO raw.churn_outcomes SELECT * FROM raw.pending_outcomes")


def test_measured_once_its_labels_land_and_not_before(
    spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    _hold_back_outcomes(resources, DAY)
    labels = Labels(spec, resources)
    # 10-03 .. 10-16 are in the window; only 10-14 and 10-15 are published, 10-15 is unlabelled.
    assert labels.tick() == [OTHER_DAY]
    [request] = labels.requests
    assert request.run_key == f"churn:labels:{OTHER_DAY}"
    assert request.asset_selection == [dg.AssetKey(["churn", STAGE])]
    assert labels.tick() == []

    early = measure(spec, resources)  # materialized by hand before the labels landed
    assert not early.success
    message = failure_message(early)
    assert f"labels for {DAY} have not landed: 0 rows, min_rows 1000" in message
    assert "'churn'" in message and STAGE in message

    _land_outcomes(resources)
    assert labels.tick() == [DAY]
    assert labels.tick() == []  # once per day
    assert measure(spec, resources).success


def test_the_labels_sensor_waits_for_min_rows(
    spec: PipelineSpec, resources: dict[str, Any]
) -> None:
    with resources["warehouse"].connect() as con:
        con.execute(
            "DELETE FROM raw.churn_outcomes WHERE snapshot_date = ? AND customer_id > 100500", [DAY]
        )  # 500 labels < min_rows 1000
    assert Labels(spec, resources).tick() == [OTHER_DAY]
    off = spec.model_copy(update={"labels": None})
    assert build_labels_sensor(build_pipeline(off)) is None
    assert STAGE not in {k.path[-1] for a in build_pipeline(off).assets for k in a.keys}


def test_regression_rmse_and_mae(resources: dict[str, Any]) -> None:
    """demand, with a published table made by hand: only realized_performance runs."""
    day = "2026-10-12"  # store_item_units holds the first 14 days
    with resources["warehouse"].connect() as con:
        con.execute(
            f"CREATE TABLE {DEMO_OUTPUT_SCHEMA}.demand_predictions AS SELECT store_id, item_id, "
            "units_last_7d / 7 AS score, 'v1' AS model_version, now() AS scored_at, "
            "'r' AS run_id, snapshot_date AS partition_date FROM raw.store_item_features "
            "WHERE snapshot_date = ?",
            [day],
        )
    demand = load_spec(PIPELINES_DIR / "demand" / "defs.yaml")
    labels = LabelsSpec(
        sql="SELECT store_id, item_id, units AS label, snapshot_date AS label_date "
        "FROM {schema}.store_item_units WHERE snapshot_date = :partition_date",
        max_rmse=1.0,
    )
    result = measure(demand.model_copy(update={"labels": labels}), resources, day)
    assert result.success, failure_message(result)
    truth = resources["warehouse"].query(
        "SELECT f.units_last_7d / 7 AS score, u.units FROM raw.store_item_features AS f "
        "JOIN raw.store_item_units AS u USING (snapshot_date, store_id, item_id) "
        "WHERE f.snapshot_date = ?",
        [day],
    )
    err = truth.column("score").to_numpy() - truth.column("units").to_numpy()
    meta = _metadata(result)
    assert meta["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert meta["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert meta["labelled_rows"] == 60 * 50 and "auc" not in meta and "reliability" not in meta
    check = _check(result)
    assert not check.passed and check.description.startswith("rmse ")
