"""`drift`: JS, KS, null and unseen rates beside PSI, per segment, and the HTML report, each
checked against a direct computation from the exported features and the published table."""

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.assets import checks
from batch_inference_assets.records import FeatureInfo, Histogram, ModelHandle
from batch_inference_assets.spec import OutputColumn
from batch_inference_assets.stages import stats
from dagster_defs.deployments import local_resources, role_resources
from tests.conftest import (
    DAY,
    OTHER_DAYS,
    SEED_CUSTOMERS,
    Materialize,
    check_results,
    failure_message,
    read_table,
)
from tests.integration.test_production_path import _models_on_s3, _s3
from tests.servers import S3_KEY, S3_SECRET

SEGMENT = "region"


def with_segments(spec: PipelineSpec, **drift: Any) -> PipelineSpec:
    """`region` carried through to the table and drift split by it."""
    kept = [c for c in spec.output.columns if c.name != SEGMENT]  # the demo carries it already
    output = spec.output.model_copy(
        update={
            "passthrough": [SEGMENT],
            "columns": [*kept, OutputColumn(name=SEGMENT, type="string")],
        }
    )
    return spec.model_copy(
        update={
            "output": output,
            "drift": spec.drift.model_copy(update={"segment_by": [SEGMENT], **drift}),
        }
    )


# A direct computation: raw values in, no helper of the code under test.


def _codes(values: list[Any], feature: FeatureInfo | None) -> np.ndarray:
    """Values as float (null -> NaN); a categorical's as its category's index (unseen -> NaN)."""
    if feature is not None and feature.type == "string":
        index = {c: i for i, c in enumerate(feature.categories)}
        return np.array([index.get(v, np.nan) if v is not None else np.nan for v in values])
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _counts(x: np.ndarray, edges: list[float]) -> np.ndarray:
    out = np.zeros(len(edges) + 2)
    for v in x:
        out[-1 if np.isnan(v) else sum(e <= v for e in edges)] += 1
    return out


def _psi(ref: Histogram, cur: np.ndarray) -> float:
    e = np.clip(np.asarray(ref.counts) / sum(ref.counts), 1e-4, None)
    a = np.clip(cur / cur.sum(), 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _entropy(p: np.ndarray) -> float:
    return float(-sum(x * math.log2(x) for x in p if x > 0))


def _js(ref: Histogram, cur: np.ndarray) -> float:
    """sqrt(H(m) - (H(p) + H(q)) / 2), base 2: another route than the KL sum."""
    p, q = np.asarray(ref.counts) / sum(ref.counts), cur / cur.sum()
    return math.sqrt(_entropy((p + q) / 2) - (_entropy(p) + _entropy(q)) / 2)


def _ks(ref: Histogram, x: np.ndarray) -> float:
    """At each edge: the reference's share of present values below it, and this partition's
    counted from its raw values."""
    present = x[~np.isnan(x)]
    ref_present = np.asarray(ref.counts[:-1], dtype=np.float64)
    ref_cdf = np.cumsum(ref_present)[:-1] / ref_present.sum()
    cur_cdf = np.array([(present < e).mean() for e in ref.edges])
    return float(np.max(np.abs(ref_cdf - cur_cdf), initial=0.0))


def _features(result: dg.ExecuteInProcessResult) -> pa.Table:
    export = result.output_for_node("churn__source_features")
    return pq.read_table([f.path for f in export.files])


def _direct(
    model: ModelHandle, features: pa.Table, scores: np.ndarray
) -> dict[str, dict[str, float]]:
    """Every metric vs training, per key, from raw values."""
    out: dict[str, dict[str, float]] = {
        "psi": {},
        "js": {},
        "ks": {},
        "null_rate": {},
        "unseen": {},
    }
    for f in model.features:
        raw = features.column(f.name).to_pylist()
        x = _codes(raw, f)
        counts = _counts(x, model.reference[f.name].edges)
        out["psi"][f.name] = _psi(model.reference[f.name], counts)
        out["js"][f.name] = _js(model.reference[f.name], counts)
        nulls = [v is None or (isinstance(v, float) and math.isnan(v)) for v in raw]
        out["null_rate"][f.name] = float(np.mean(nulls))
        if f.type == "string":
            seen = set(f.categories)
            out["unseen"][f.name] = float(np.mean([v is not None and v not in seen for v in raw]))
        else:
            out["ks"][f.name] = _ks(model.reference[f.name], x)
    ref = model.reference[stats.SCORE_KEY]
    counts = _counts(scores, ref.edges)
    out["psi"][stats.SCORE_KEY] = _psi(ref, counts)
    out["js"][stats.SCORE_KEY] = _js(ref, counts)
    out["ks"][stats.SCORE_KEY] = _ks(ref, scores)
    return out


def _svg_counts(page: str, element: str) -> tuple[list[int], list[int]]:
    match = re.search(
        rf"<svg id=\"{element}\"[^>]*data-reference='([^']*)' data-current='([^']*)'", page
    )
    assert match, f"no {element} in the report"
    return json.loads(match.group(1)), json.loads(match.group(2))


def test_every_metric_overall_and_per_segment_matches_a_direct_computation(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = with_segments(churn_spec, max_segments=4)
    assert materialize(OTHER_DAYS[1], spec).success
    with resources["warehouse"].connect() as con:  # categories the model never saw; no region
        for change in ("contract = 'lifetime' WHERE customer_id % 40 = 0",
                       "region = NULL WHERE customer_id % 90 = 0"):  # fmt: skip
            con.execute(f"UPDATE raw.customer_features SET {change} AND snapshot_date = ?", [DAY])
    result = materialize(DAY, spec)
    assert result.success, failure_message(result)
    md: dict[str, Any] = {
        k: v.value
        for k, v in result.asset_materializations_for_node("churn__drift_stats")[0].metadata.items()
    }
    model: ModelHandle = result.output_for_node("churn__model")
    features = _features(result)
    table = read_table(resources, "WHERE partition_date = ?", (DAY,))
    before = read_table(resources, "WHERE partition_date = ?", (OTHER_DAYS[1],))
    scores = np.asarray(table.column("score").to_pylist(), dtype=np.float64)

    # The whole partition: each metric of the score and of every feature.
    direct = _direct(model, features, scores)
    name = {stats.SCORE_KEY: "score"}
    for metric in ("psi", "js", "ks"):
        for k, value in direct[metric].items():
            assert md[f"{metric}/{name.get(k, k)}"] == pytest.approx(value, abs=1e-9), (metric, k)
    for metric in ("null_rate", "unseen"):
        for k, value in direct[metric].items():
            assert md[f"{metric}/{k}"] == pytest.approx(value, abs=1e-12), (metric, k)
    assert direct["unseen"] and direct["ks"]  # both kinds of features are covered
    assert direct["unseen"]["contract"] > 0 and direct["null_rate"]["region"] > 0
    # ... and against the previous day, from its published scores.
    previous = np.asarray(before.column("score").to_pylist(), dtype=np.float64)
    prev_hist = Histogram(
        edges=model.reference[stats.SCORE_KEY].edges,
        counts=_counts(previous, model.reference[stats.SCORE_KEY].edges).astype(int).tolist(),
    )
    current = _counts(scores, prev_hist.edges)
    assert md["psi_vs_previous/score"] == pytest.approx(_psi(prev_hist, current), abs=1e-9)
    assert md["js_vs_previous/score"] == pytest.approx(_js(prev_hist, current), abs=1e-9)

    # The segments: the 4 largest regions, the 2 others pooled, the null region apart. For the
    # largest and the pooled one: its rows, the score's metrics and the largest feature PSI in
    # the metadata, every metric in the stored profile.
    regions = features.column(SEGMENT).to_pylist()
    ranked = sorted(set(regions) - {None}, key=lambda r: (-regions.count(r), r))
    doc = json.loads(Path(md["profile"]).read_text())["segments"]
    labels = [f"{SEGMENT}={r}" for r in ranked[:4]] + [f"{SEGMENT}=(other)", f"{SEGMENT}=(null)"]
    assert sorted(doc) == sorted(labels)
    published = table.column(SEGMENT).to_pylist()
    for label, members in ((labels[0], {ranked[0]}), (labels[4], set(ranked[4:]))):
        mask = np.array([r in members for r in regions])
        in_table = np.array([r in members for r in published])
        seg = _direct(model, features.filter(pa.array(mask)), scores[in_table])
        assert md[f"rows/{label}"] == mask.sum() == in_table.sum() > 0
        assert md[f"psi/{label}/score"] == pytest.approx(seg["psi"][stats.SCORE_KEY], abs=1e-9)
        assert md[f"js/{label}/score"] == pytest.approx(seg["js"][stats.SCORE_KEY], abs=1e-9)
        others = {k: v for k, v in seg["psi"].items() if k not in (stats.SCORE_KEY, SEGMENT)}
        assert md[f"psi/{label}/max_feature"] == pytest.approx(max(others.values()), abs=1e-9)
        metrics = doc[label]["metrics"]
        for metric in ("psi", "js", "ks"):
            for k, v in seg[metric].items():
                assert metrics["vs_training"][metric][k] == pytest.approx(v, abs=1e-9), (label, k)
        for metric in ("null_rate", "unseen"):
            assert metrics[metric] == pytest.approx(seg[metric], abs=1e-12), label
        assert metrics["vs_previous"] is not None  # the previous day had the same segment
    assert md[f"rows/{SEGMENT}=(null)"] == regions.count(None) > 0

    # The summary names the worst segment; the report is linked and draws the score.
    assert md["worst_segment"].startswith(f"{SEGMENT}=")
    assert f"**Worst segment: {md['worst_segment']}**" in md["summary"]
    page = Path(md["report"]).read_text()
    assert Path(md["report"]) == Path(
        resources["object_store"].root, "churn", "drift", DAY, "report.html"
    )
    reference, drawn = _svg_counts(page, "histogram-score")
    assert reference == model.reference[stats.SCORE_KEY].counts
    assert drawn == _counts(scores, model.reference[stats.SCORE_KEY].edges).astype(int).tolist()
    assert "histogram-worst-segment" in page and f"<td>{md['worst_segment']}</td>" in page
    # The drift checks still run on the whole partition's PSI.
    evaluated = check_results(result)
    assert set(checks.DRIFT_CHECKS) <= {c for (stage, c) in evaluated if stage == "drift_stats"}


def test_without_segment_by_there_is_no_segment_metadata_and_report_false_writes_none(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    spec = churn_spec.model_copy(
        update={"drift": churn_spec.drift.model_copy(update={"report": False, "segment_by": []})}
    )
    result = materialize(DAY, spec)
    assert result.success, failure_message(result)
    md = result.asset_materializations_for_node("churn__drift_stats")[0].metadata
    assert {"js/score", "ks/score", "js/tenure", "ks/tenure", "null_rate/tenure"} <= set(md)
    assert not [k for k in md if k.startswith("rows/") or k.count("/") > 1]
    assert "worst_segment" not in md and "Worst segment" not in str(md["summary"].value)
    assert "report" not in md
    assert not (Path(resources["object_store"].root) / "churn" / "drift" / DAY).exists()


def test_segments_and_the_report_over_s3(
    root: Path, churn_spec: PipelineSpec, s3_bucket: str, s3_endpoint: str
) -> None:
    """The scans read the export and the scored files through the store's own filesystem (no
    DuckDB extension), and the report is one object in the bucket."""
    object_store = _s3(s3_bucket, s3_endpoint)
    warehouse = local_resources(root)["warehouse"]
    models = _models_on_s3(root, s3_bucket, s3_endpoint)
    resources = role_resources(warehouse, object_store, models)
    result = dg.materialize(
        build_pipeline(with_segments(churn_spec)).assets, partition_key=DAY,
        resources=resources, raise_on_error=False,
    )  # fmt: skip
    assert result.success, failure_message(result)
    md: dict[str, Any] = {
        k: v.value
        for k, v in result.asset_materializations_for_node("churn__drift_stats")[0].metadata.items()
    }
    regions = [k for k in md if k.startswith(f"rows/{SEGMENT}=")]
    assert len(regions) == 6 and sum(md[k] for k in regions) == SEED_CUSTOMERS
    report = md["report"]
    assert report == f"s3://{s3_bucket}/bi/churn/drift/{DAY}/report.html"
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key=S3_KEY, secret=S3_SECRET)
    assert '<svg id="histogram-score"' in fs.cat(report).decode()


def test_a_partition_whose_files_are_gone_fails_naming_the_cause(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    """drift_stats run alone after retention removed the day's export: a clear failure."""
    assert materialize(DAY).success
    store = Path(resources["object_store"].root)
    shutil.rmtree(store / "churn" / "features" / DAY)
    pipeline = build_pipeline(churn_spec)
    result = dg.materialize(
        pipeline.assets, selection=[pipeline.key("drift_stats")], partition_key=DAY,
        resources=resources, raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    message = failure_message(result)
    assert "churn" in message and DAY in message
    assert "cannot read the partition's exported or scored files" in message
