"""The drift metrics beside PSI, each against a direct computation; the DuckDB scan's buckets
and segments against numpy's; the profile's storage and the report page."""

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.records import (
    ExportedFile,
    FeatureExport,
    FeatureInfo,
    Histogram,
    ModelHandle,
    ScoredShards,
    ShardScore,
)
from batch_inference_assets.stages import drift, drift_profile, drift_report, stats


def _entropy(p: np.ndarray) -> float:
    return float(-sum(x * math.log2(x) for x in p if x > 0))


def test_js_distance_is_the_square_root_of_the_entropy_gap() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        e = rng.integers(0, 50, 6)
        a = rng.integers(0, 50, 6)
        e[rng.integers(0, 6)] = 0  # an empty bucket on one side needs no epsilon
        p, q = e / e.sum(), a / a.sum()
        expected = math.sqrt(_entropy((p + q) / 2) - (_entropy(p) + _entropy(q)) / 2)
        got = stats.js_distance(
            Histogram(edges=[1, 2, 3, 4], counts=e.tolist()),
            Histogram(edges=[1, 2, 3, 4], counts=a.tolist()),
        )
        assert got == pytest.approx(expected, abs=1e-12)


def test_js_distance_bounds_missing_bucket_and_empty_sides() -> None:
    h = Histogram(edges=[1.0], counts=[5, 5, 0])
    assert stats.js_distance(h, h) == 0.0
    disjoint = Histogram(edges=[1.0], counts=[0, 0, 7])  # all missing: counted, not dropped
    assert stats.js_distance(h, disjoint) == pytest.approx(1.0)
    assert math.isnan(stats.js_distance(h, Histogram(edges=[1.0], counts=[0, 0, 0])))
    with pytest.raises(ValueError, match="same edges"):
        stats.js_distance(h, Histogram(edges=[2.0], counts=[1, 1, 1]))


def _exact_ks(a: np.ndarray, b: np.ndarray) -> float:
    points = np.concatenate([a, b])
    return float(max(abs((a <= x).mean() - (b <= x).mean()) for x in points))


def test_ks_statistic_reads_both_cdfs_at_the_edges_a_lower_bound_of_the_exact_one() -> None:
    rng = np.random.default_rng(2)
    ref, cur = rng.normal(0, 1, 3_000), rng.normal(0.3, 1.2, 2_000)
    edges = stats.quantile_edges(ref)
    with_missing = np.concatenate([cur, [np.nan] * 500])  # missing values are not values
    got = stats.ks_statistic(stats.histogram(ref, edges), stats.histogram(with_missing, edges))
    direct = max(abs((ref < e).mean() - (cur < e).mean()) for e in edges)
    assert got == pytest.approx(direct, abs=1e-12)
    assert 0.05 < got <= _exact_ks(ref, cur)
    same = stats.histogram(ref, edges)
    assert stats.ks_statistic(same, same) == 0.0
    all_missing = stats.histogram(np.array([np.nan]), edges)
    assert math.isnan(stats.ks_statistic(same, all_missing))


def test_missing_rate_is_the_last_buckets_share() -> None:
    assert stats.missing_rate(Histogram(edges=[1.0], counts=[2, 1, 1])) == 0.25
    assert math.isnan(stats.missing_rate(Histogram(edges=[1.0], counts=[0, 0, 0])))


def test_duckdb_buckets_are_numpys() -> None:
    edges = [-1.0, 0.0, 0.1, 0.30000000000000004, 2.5]
    values = [-5.0, -1.0, -0.5, 0.0, 0.1, 0.3, 0.30000000000000004, 2.5, 9.0,
              math.inf, -math.inf, math.nan, None]  # fmt: skip
    con = duckdb.connect()
    con.register("t", pa.table({"v": pa.array(values, pa.float64(), from_pandas=False)}))
    sql = f"SELECT {drift_profile.bucket_sql('v', edges)} FROM t"
    got = [r[0] for r in con.execute(sql).fetchall()]
    x = np.array([np.nan if v is None else v for v in values])
    expected = [int(b) for b in np.searchsorted(edges, x, side="right")]
    assert got == [-1 if np.isnan(v) else b for v, b in zip(x, expected, strict=True)]


FEATURES = [
    FeatureInfo(name="x", type="float64"),
    FeatureInfo(name="plan", type="string", categories=["basic", "pro"]),
]


def _model() -> ModelHandle:
    rng = np.random.default_rng(3)
    train_x = rng.normal(0, 1, 1_000)
    reference = {
        "x": stats.histogram(train_x, stats.quantile_edges(train_x)),
        "plan": stats.histogram(rng.integers(0, 2, 1_000).astype(float), stats.category_edges(2)),
        stats.SCORE_KEY: stats.histogram(rng.uniform(size=1_000), stats.quantile_edges(
            rng.uniform(size=1_000))),
    }  # fmt: skip
    return ModelHandle(name="m", version="v1", kind="lightgbm_binary", uri="m",
                       features=FEATURES, reference=reference)  # fmt: skip


def _partition(tmp_path: Path, model: ModelHandle) -> tuple[FeatureExport, ScoredShards, dict]:
    """400 rows: 4 regions of falling size and some nulls; plan with nulls and unseen values."""
    rng = np.random.default_rng(4)
    n = 400
    region = rng.choice(["n", "s", "e", "w"], n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    region[::37] = None
    x = rng.normal(0.5, 1, n)
    x[::11] = np.nan
    plan = rng.choice(["basic", "pro", "gold"], n).astype(object)
    plan[::13] = None
    score = rng.uniform(size=n)
    cols = {"id": np.arange(n), "region": list(region), "x": x, "plan": list(plan)}
    pq.write_table(pa.table(cols), tmp_path / "features.parquet")
    pq.write_table(pa.table({"id": np.arange(n), "score": score, "region": list(region)}),
                   tmp_path / "scored.parquet")  # fmt: skip
    export = FeatureExport(
        pipeline="p", partition="2026-10-15", rows=n, bytes=0, columns={}, query_seconds=0,
        files=[ExportedFile(path=str(tmp_path / "features.parquet"), rows=n, bytes=0,
                            row_groups=[])],
    )  # fmt: skip
    score_hist = stats.histogram(score, model.reference[stats.SCORE_KEY].edges)
    shard = ShardScore(index=0, path=str(tmp_path / "scored.parquet"), rows=n, seconds=0,
                       peak_rss_bytes=0, positives=0, confidence_sum=0,
                       histograms={stats.SCORE_KEY: score_hist})  # fmt: skip
    scored = ScoredShards(pipeline="p", partition="2026-10-15", model_version="v1",
                          source_rows=n, shards=[shard])  # fmt: skip
    return export, scored, {"region": region, "x": x, "plan": plan, "score": score}


def _codes(plan: np.ndarray) -> np.ndarray:
    index = {"basic": 0.0, "pro": 1.0}
    return np.array([index.get(v, np.nan) if v is not None else np.nan for v in plan])


def test_the_scan_splits_by_segment_pools_the_rest_and_keeps_nulls_apart(tmp_path: Path) -> None:
    model = _model()
    export, scored, raw = _partition(tmp_path, model)
    store = LocalObjectStore(root=str(tmp_path))
    profile = drift_profile.scan_partition(model, export, scored, ["region"], 2, store)
    assert list(profile.segments) == ["region=n", "region=s", "region=(other)", "region=(null)"]
    groups = {
        None: np.ones(len(raw["region"]), dtype=bool),
        "region=n": raw["region"] == "n",
        "region=(other)": np.isin(raw["region"], ["e", "w"]),
        "region=(null)": np.array([r is None for r in raw["region"]]),
    }
    for label, mask in groups.items():
        p = profile.overall if label is None else profile.segments[label]
        assert p.rows == mask.sum()
        edges = {k: model.reference[k].edges for k in ("x", "plan", stats.SCORE_KEY)}
        assert p.histograms["x"] == stats.histogram(raw["x"][mask], edges["x"])
        assert p.histograms["plan"] == stats.histogram(_codes(raw["plan"][mask]), edges["plan"])
        score = stats.histogram(raw["score"][mask], edges[stats.SCORE_KEY])
        assert p.histograms[stats.SCORE_KEY] == score
        plan = raw["plan"][mask]
        assert p.nulls == {"x": int(np.isnan(raw["x"][mask]).sum()),
                           "plan": sum(v is None for v in plan)}  # fmt: skip
        assert p.unseen == {"plan": sum(v == "gold" for v in plan)}


def test_report_metadata_profile_and_page(tmp_path: Path) -> None:
    model = _model()
    export, scored, _ = _partition(tmp_path, model)
    store = LocalObjectStore(root=str(tmp_path))
    profile = drift_profile.scan_partition(model, export, scored, ["region"], 2, store)
    report = drift.drift_report(model, profile, previous=profile)
    md = drift.metric_metadata(report)
    assert md["ks/x"] == report.overall.reference.ks["x"] and "ks/plan" not in md
    assert "unseen/plan" in md and "unseen/x" not in md
    assert md["psi_vs_previous/score"] == 0.0 and md["js_vs_previous/score"] == 0.0
    per_segment = {k for k in md if k.count("/") == 2 or k.startswith("rows/")}
    assert len(per_segment) == 4 * len(profile.segments)
    assert md["rows/region=n"] == profile.segments["region=n"].rows
    # The stored profile comes back whole; one without segments (an older one) still loads.
    path = tmp_path / "profile.json"
    path.write_text(report.to_json())
    back = drift.load_profile(UPath(str(path)), "v1")
    assert back == profile
    assert drift.load_profile(UPath(str(path)), "v2") is None
    old = {"model_version": "v1", "histograms": json.loads(path.read_text())["histograms"],
           "psi_reference": {}, "psi_previous": None}  # fmt: skip
    path.write_text(json.dumps(old))
    loaded = drift.load_profile(UPath(str(path)), "v1")
    assert loaded is not None and loaded.segments == {}
    assert loaded.overall.histograms == profile.overall.histograms
    # The page draws the score's histograms with their counts, and the segment table.
    page = drift_report.render_report(report, model, "p", "2026-10-15", "2026-10-14", 0.1, 0.25)
    counts = (
        f"data-reference='{json.dumps(model.reference[stats.SCORE_KEY].counts)}' "
        f"data-current='{json.dumps(profile.overall.histograms[stats.SCORE_KEY].counts)}'"
    )
    assert '<svg id="histogram-score"' in page and counts in page
    assert "histogram-x" in page and "histogram-plan" in page
    assert "<td>region=(null)</td>" in page and "histogram-worst-segment" in page
    written = drift_report.write_report(store, "p", "2026-10-15", page)
    assert Path(written.path) == tmp_path / "p" / "drift" / "2026-10-15" / "report.html"
    assert drift_report.write_report(store, "p", "2026-10-15", "again").read_text() == "again"
    assert sorted(p.name for p in Path(written.path).parent.iterdir()) == ["report.html"]


def test_bucket_labels_name_categories_and_ranges() -> None:
    plan = FEATURES[1]
    assert drift_report.bucket_labels(stats.category_edges(2), plan) == [
        "basic", "pro", "missing or unseen"]  # fmt: skip
    assert drift_report.bucket_labels([1.0, 2.5], None) == [
        "< 1", "[1, 2.5)", "≥ 2.5", "missing"]  # fmt: skip
    svg = drift_report.histogram_svg(
        "h", "<b>", ["a&b", "missing"], Histogram(edges=[], counts=[3, 1]),
        Histogram(edges=[], counts=[0, 0]),
    )  # fmt: skip
    assert "&lt;b&gt;" in svg and "a&amp;b" in svg and "<b>" not in svg
