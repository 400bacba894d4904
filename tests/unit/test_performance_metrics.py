"""Realized-performance metrics: the pure functions, and the warehouse's aggregates (on a DuckDB
file) against a direct numpy computation."""

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.spec import LabelsSpec, PipelineSpec
from batch_inference_assets.stages import performance
from batch_inference_assets.stages.performance import Metrics, ReliabilityBin

DAY = date(2026, 10, 15)
WINDOW = (datetime(2026, 10, 15, tzinfo=UTC), datetime(2026, 10, 16, tzinfo=UTC))
LABELS_SQL = (
    "SELECT id, y AS label, d AS label_date FROM {schema}.outcomes "
    "WHERE d = :partition_date -- a comment at the end"
)


def rank_auc(y: np.ndarray, p: np.ndarray) -> float:
    """AUC by the rank formula, ties given their average rank."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos, neg = y.sum(), len(y) - y.sum()
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, performance.EPS, 1 - performance.EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def ece(y: np.ndarray, p: np.ndarray) -> float:
    bins = np.minimum(np.floor(p * 10).astype(int), 9)
    total = 0.0
    for b in range(10):
        mask = bins == b
        if mask.any():
            total += mask.sum() / len(p) * abs(p[mask].mean() - y[mask].mean())
    return total


# --- pure functions ------------------------------------------------------------------------


def test_auc_from_pairs_needs_both_classes() -> None:
    assert performance.auc_from_pairs(6, 2, 4) == 0.75
    assert performance.auc_from_pairs(0, 0, 4) is None
    assert performance.auc_from_pairs(0, 3, 0) is None


def test_reliability_bins_and_calibration_error() -> None:
    bins = performance.reliability_bins([(0, 4, 0.2, 1), (9, 2, 1.9, 2)])
    assert len(bins) == 10 and [b.rows for b in bins] == [4, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[1].mean_predicted is None and bins[9].observed_rate == 1.0
    # |0.05 - 0.25| * 4/6 + |0.95 - 1.0| * 2/6
    assert performance.calibration_error(bins) == pytest.approx(0.2 * 4 / 6 + 0.05 * 2 / 6)
    assert performance.calibration_error(performance.reliability_bins([])) is None


def test_classification_metrics_match_a_direct_count() -> None:
    confusion = {("a", "a"): 5, ("a", "b"): 2, ("b", "b"): 3, ("c", "a"): 1}
    got = performance.classification_metrics(confusion)
    assert got["accuracy"] == pytest.approx(8 / 11)
    f1_a = 2 * 5 / (2 * 5 + 2 + 1)
    f1_b = 2 * 3 / (2 * 3 + 0 + 2)
    f1_c = 0.0  # predicted once, never right
    assert got["macro_f1"] == pytest.approx((f1_a + f1_b + f1_c) / 3)
    assert performance.classification_metrics({}) == {}


def test_thresholds_compare_only_what_is_set() -> None:
    labels = LabelsSpec(sql="SELECT 1 AS label", min_auc=0.8, max_calibration_error=0.05)
    metrics = Metrics(100, 90, {"auc": 0.85, "log_loss": 0.3, "calibration_error": 0.07})
    compared = performance.compare_with_thresholds(labels, metrics)
    assert [(c.metric, c.passed) for c in compared] == [
        ("auc", True),
        ("calibration_error", False),
    ]
    assert compared[1].describe() == "calibration_error 0.0700 (want <= 0.05): FAIL"
    assert performance.compare_with_thresholds(LabelsSpec(sql="SELECT 1 AS label"), metrics) == []
    undefined = performance.compare_with_thresholds(labels, Metrics(10, 10, {}))
    assert not any(c.passed for c in undefined) and "auc n/a" in undefined[0].describe()


def test_reliability_markdown_has_every_bin() -> None:
    bins = [ReliabilityBin(0.0, 0.1, 3, 0.05, 0.0), ReliabilityBin(0.1, 0.2, 0, None, None)]
    text = performance.reliability_markdown(bins)
    assert "| 0.0-0.1 | 0.050 | 0.000 | 3 |" in text and "| 0.1-0.2 |  |  | 0 |" in text


def test_metric_kind_by_model_kind() -> None:
    assert performance.metric_kind("lightgbm_binary") == "binary"
    assert performance.metric_kind("lightgbm_multiclass") == "multiclass"
    assert performance.metric_kind("lightgbm_regression") == "regression"
    assert performance.metric_kind("python") == "regression"


# --- aggregates in the warehouse -----------------------------------------------------------


def _spec(kind: str, label_type: str | None, segment: bool = True) -> PipelineSpec:
    columns: list[dict[str, Any]] = [
        {"name": "id", "type": "int64", "nullable": False},
        {"name": "score", "type": "float64", "nullable": False},
        {"name": "model_version", "type": "string", "nullable": False},
        {"name": "scored_at", "type": "timestamp", "nullable": False},
        {"name": "run_id", "type": "string", "nullable": False},
        {"name": "partition_date", "type": "date", "nullable": False},
    ]
    if label_type:
        columns.append({"name": "label", "type": label_type})
    passthrough = []
    if segment:
        columns.append({"name": "region", "type": "string"})
        passthrough = ["region"]
    return PipelineSpec.model_validate(
        {
            "name": "t",
            "start_date": "2026-10-01",
            "features": {"sql": "SELECT 1 AS id", "id_columns": ["id"]},
            "model": {"name": "m", "kind": kind},
            "output": {"table": "preds", "columns": columns, "passthrough": passthrough},
            "drift": {"segment_by": passthrough},
            "labels": {"sql": LABELS_SQL},
        }
    )


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    return DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))


def _publish(
    warehouse: DuckDBWarehouse,
    table: str,
    score: np.ndarray,
    label: Any = None,
    region: Any = None,
    version: str = "v1",
    day: date = DAY,
) -> None:
    n = len(score)
    cols: dict[str, Any] = {
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "score": pa.array(score),
        "model_version": pa.array([version] * n),
        "partition_date": pa.array([day] * n, pa.date32()),
    }
    if label is not None:
        cols["label"] = pa.array(label)
    if region is not None:
        cols["region"] = pa.array(region)
    with warehouse.connect() as con:
        con.register("rows", pa.table(cols))
        con.execute(f"CREATE TABLE IF NOT EXISTS main.{table} AS SELECT * FROM rows LIMIT 0")
        con.execute(f"INSERT INTO main.{table} BY NAME SELECT * FROM rows")


def _outcomes(warehouse: DuckDBWarehouse, y: Any, ids: np.ndarray, day: date = DAY) -> None:
    with warehouse.connect() as con:
        con.register("o", pa.table({"id": pa.array(ids), "y": pa.array(y), "d": [day] * len(ids)}))
        con.execute("CREATE TABLE IF NOT EXISTS main.outcomes AS SELECT * FROM o LIMIT 0")
        con.execute("INSERT INTO main.outcomes SELECT * FROM o")


def test_binary_metrics_match_numpy_overall_and_per_segment(warehouse: DuckDBWarehouse) -> None:
    rng = np.random.default_rng(7)
    n = 3_000
    score = np.round(rng.random(n), 2)  # rounded: many ties, which AUC counts as half
    y = (rng.random(n) < score).astype(np.int64)
    region = np.where(rng.random(n) < 0.3, "east", "west").astype(object)
    region[:10] = None
    _publish(warehouse, "preds", score, (score >= 0.5).astype(np.int64), region)
    labelled = np.arange(n) % 4 != 0  # a quarter of the labels have not landed
    _outcomes(warehouse, y[labelled], np.arange(n)[labelled])
    _outcomes(warehouse, y[:50], np.arange(50), day=DAY - timedelta(days=1))  # another day's

    spec = _spec("lightgbm_binary", "int64")
    result = performance.realized_performance(spec, warehouse, DAY, WINDOW)
    ys, ps = y[labelled], score[labelled]
    o = result.overall
    assert (o.published_rows, o.labelled_rows) == (n, labelled.sum())
    assert o.coverage == pytest.approx(0.75)
    assert o.values["auc"] == pytest.approx(rank_auc(ys, ps), abs=1e-12)
    assert o.values["log_loss"] == pytest.approx(log_loss(ys, ps), rel=1e-9)
    assert o.values["calibration_error"] == pytest.approx(ece(ys, ps), abs=1e-12)
    assert sum(b.rows for b in result.reliability) == labelled.sum()
    east = (region == "east") & labelled
    assert result.segments["region"]["east"].values["auc"] == pytest.approx(
        rank_auc(y[east], score[east]), abs=1e-12
    )
    assert result.segments["region"]["null"].published_rows == 10
    meta = performance.metadata_values(result)
    assert meta["auc/region=east"] == result.segments["region"]["east"].values["auc"]
    assert "log_loss/region=east" not in meta and meta["labelled_rows"] == labelled.sum()
    assert result.challengers == {}  # no <table>_shadow


def test_a_challenger_in_the_shadow_table_is_measured_on_its_own_rows(
    warehouse: DuckDBWarehouse,
) -> None:
    rng = np.random.default_rng(8)
    n = 500
    score = rng.random(n)
    y = (rng.random(n) < score).astype(np.int64)
    _publish(warehouse, "preds", score, region=np.array(["a"] * n, dtype=object))
    noisy = np.clip(score + rng.normal(0, 0.3, n), 0, 1)
    _publish(warehouse, "preds_shadow", noisy, region=np.array(["a"] * n, dtype=object),
             version="c2")  # fmt: skip
    _publish(warehouse, "preds_shadow", 1 - score, region=np.array(["a"] * n, dtype=object),
             version="c1")  # fmt: skip
    _outcomes(warehouse, y, np.arange(n))
    spec = _spec("lightgbm_binary", None)
    result = performance.realized_performance(spec, warehouse, DAY, WINDOW)
    assert list(result.challengers) == ["c1", "c2"]
    assert result.challengers["c1"].values["auc"] == pytest.approx(1 - rank_auc(y, score))
    assert result.challengers["c2"].values["auc"] == pytest.approx(rank_auc(y, noisy))
    assert result.challengers["c2"].labelled_rows == n
    meta = performance.metadata_values(result)
    assert meta["auc/model_version=c2"] == result.challengers["c2"].values["auc"]


def test_regression_metrics_match_numpy(warehouse: DuckDBWarehouse) -> None:
    rng = np.random.default_rng(9)
    n = 800
    score = rng.gamma(2, 3, n)
    y = rng.poisson(score).astype(np.float64)
    _publish(warehouse, "preds", score, region=np.array(["x", "y"] * (n // 2), dtype=object))
    _outcomes(warehouse, y, np.arange(n))
    result = performance.realized_performance(
        _spec("lightgbm_regression", None), warehouse, DAY, WINDOW
    )
    assert result.overall.values["rmse"] == pytest.approx(np.sqrt(np.mean((score - y) ** 2)))
    assert result.overall.values["mae"] == pytest.approx(np.mean(np.abs(score - y)))
    x = np.arange(n) % 2 == 0
    assert result.segments["region"]["x"].values["rmse"] == pytest.approx(
        np.sqrt(np.mean((score[x] - y[x]) ** 2))
    )
    assert "auc" not in result.overall.values and result.reliability == []


def test_multiclass_accuracy_and_macro_f1(warehouse: DuckDBWarehouse) -> None:
    predicted = np.array(["a", "a", "b", "b", "c", "a"], dtype=object)
    actual = np.array(["a", "b", "b", "b", "a", "a"], dtype=object)
    _publish(warehouse, "preds", np.full(6, 0.9), predicted)
    _outcomes(warehouse, actual, np.arange(6))
    spec = _spec("lightgbm_multiclass", "string", segment=False)
    result = performance.realized_performance(spec, warehouse, DAY, WINDOW)
    f1 = [2 * 2 / (4 + 1 + 1), 2 * 2 / (4 + 0 + 1), 0.0]  # a, b, c
    assert result.overall.values == pytest.approx({"accuracy": 4 / 6, "macro_f1": sum(f1) / 3})


def test_labels_that_have_not_landed_fail_clearly(warehouse: DuckDBWarehouse) -> None:
    _publish(warehouse, "preds", np.array([0.1, 0.9]))
    _outcomes(warehouse, [1], np.array([1]))
    spec = _spec("lightgbm_binary", None, segment=False)
    assert performance.count_labels(spec, warehouse, DAY, WINDOW) == 1
    labels = spec.labels
    assert labels is not None
    strict = spec.model_copy(update={"labels": labels.model_copy(update={"min_rows": 2})})
    with pytest.raises(performance.LabelsNotLanded, match=f"labels for {DAY} have not landed: "
                       "1 rows, min_rows 2"):  # fmt: skip
        performance.check_landed(strict, warehouse, DAY, WINDOW)
    # One label: AUC is undefined (one class), the rest is still measured.
    result = performance.realized_performance(spec, warehouse, DAY, WINDOW)
    assert "auc" not in result.overall.values
    assert math.isfinite(result.overall.values["log_loss"])


def test_labels_outside_zero_one_are_refused_for_a_binary_model(
    warehouse: DuckDBWarehouse,
) -> None:
    _publish(warehouse, "preds", np.array([0.1, 0.9]))
    _outcomes(warehouse, [1, 2], np.array([0, 1]))
    with pytest.raises(ValueError, match="1 labels are neither 0 nor 1"):
        performance.realized_performance(
            _spec("lightgbm_binary", None, segment=False), warehouse, DAY, WINDOW
        )


def test_an_id_labelled_twice_is_refused(warehouse: DuckDBWarehouse) -> None:
    _publish(warehouse, "preds", np.array([0.1, 0.9]))
    _outcomes(warehouse, [0, 1, 1], np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=f"labels for {DAY}: 1 ids have more than one label"):
        performance.realized_performance(
            _spec("lightgbm_binary", None, segment=False), warehouse, DAY, WINDOW
        )


def test_published_days(warehouse: DuckDBWarehouse) -> None:
    spec = _spec("lightgbm_binary", None, segment=False)
    assert performance.published_days(spec, warehouse, DAY, DAY) == set()  # no table yet
    _publish(warehouse, "preds", np.array([0.1]))
    _publish(warehouse, "preds", np.array([0.1]), day=DAY + timedelta(days=2))
    assert performance.published_days(spec, warehouse, DAY - timedelta(days=3), DAY) == {DAY}


def test_the_spec_knows_the_kinds_of_every_threshold() -> None:
    """The spec refuses a threshold for a kind whose realized performance lacks its metric;
    its table covers every threshold that LabelsSpec has and the check compares."""
    from batch_inference_assets.spec import LABEL_THRESHOLDS

    bounds = {f for f in LabelsSpec.model_fields if f[:4] in ("min_", "max_")} - {"min_rows"}
    assert set(LABEL_THRESHOLDS) == {name for name, _, _ in performance.THRESHOLDS} == bounds
