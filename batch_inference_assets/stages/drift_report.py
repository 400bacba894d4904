"""The drift report: one self-contained HTML page per partition (inline SVG, no script), with
training vs current histograms of the score and the most drifted features and the segment
table, written to the object store under `<p>/drift/<day>/report.html`."""

import html
import itertools
import json
import math
from collections.abc import Sequence

from upath import UPath

from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.parquet_files import place_file, temp_file_for
from batch_inference_assets.records import FeatureInfo, Histogram, ModelHandle
from batch_inference_assets.stages import stats
from batch_inference_assets.stages.drift import (
    MIN_RANKED_ROWS,
    DriftReport,
    PopulationDrift,
    fmt,
    key_name,
    largest_first,
    pct,
    segment_column,
    segment_drift,
    segments_by_drift,
    worst_feature,
)

TOP_FEATURES = 6  # histograms drawn besides the score's
_REFERENCE_COLOUR, _CURRENT_COLOUR = "#9aa5b1", "#2b6cb0"


def report_path(object_store: ObjectStore, pipeline: str, partition: str) -> UPath:
    return object_store.path(pipeline, "drift", partition, "report.html")


def bucket_labels(edges: list[float], feature: FeatureInfo | None) -> list[str]:
    """One label per bucket of a histogram over `edges`, the missing bucket last."""
    if (
        feature is not None
        and feature.type == "string"
        and len(feature.categories) == len(edges) + 1
    ):
        return [*feature.categories, "missing or unseen"]
    if not edges:
        return ["all", "missing"]
    e = [f"{x:.4g}" for x in edges]
    inner = [f"[{a}, {b})" for a, b in itertools.pairwise(e)]
    return [f"< {e[0]}", *inner, f"≥ {e[-1]}", "missing"]


def histogram_svg(
    element_id: str, title: str, labels: Sequence[str], reference: Histogram, current: Histogram
) -> str:
    """Grouped bars of each bucket's share, training beside current. The counts ride along as
    data attributes, so the figure can be checked against the data."""
    ref, cur = reference.counts, current.counts
    ref_total, cur_total = sum(ref) or 1, sum(cur) or 1
    shares = [(r / ref_total, c / cur_total) for r, c in zip(ref, cur, strict=True)]
    top = max((max(pair) for pair in shares), default=0.0) or 1.0
    group, bar, left, plot_h, label_h = 44, 18, 44, 150, 90
    width, height = left + group * len(shares) + 10, 30 + plot_h + label_h
    base = 30 + plot_h
    parts = [
        f'<svg id="{html.escape(element_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}" '
        f"data-reference='{json.dumps(ref)}' data-current='{json.dumps(cur)}'>",
        f'<text x="{left}" y="16" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#444"/>',
        f'<text x="{left - 4}" y="34" text-anchor="end" font-size="10">{top:.0%}</text>',
        f'<text x="{left - 4}" y="{base}" text-anchor="end" font-size="10">0%</text>',
    ]
    for i, ((r, c), label) in enumerate(zip(shares, labels, strict=True)):
        x = left + i * group + 4
        for offset, share, colour, who in ((0, r, _REFERENCE_COLOUR, "training"),
                                           (bar, c, _CURRENT_COLOUR, "current")):  # fmt: skip
            h = share / top * plot_h
            parts.append(
                f'<rect x="{x + offset}" y="{base - h:.1f}" width="{bar}" height="{h:.1f}" '
                f'fill="{colour}"><title>{html.escape(label)}: {who} {share:.1%}</title></rect>'
            )
        cx = x + bar
        parts.append(
            f'<text x="{cx}" y="{base + 12}" font-size="10" text-anchor="end" '
            f'transform="rotate(-40 {cx} {base + 12})">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(header: Sequence[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _metric_rows(report: DriftReport, keys: list[str]) -> list[list[str]]:
    overall, previous = report.overall, report.overall.previous
    rows = []
    for k in keys:
        missing = (
            f"{pct(overall.null_rate[k])} ({pct(report.null_rate_reference.get(k))})"
            if k in overall.null_rate
            else "-"
        )
        rows.append([
            f"<b>{html.escape(key_name(k))}</b>",
            fmt(overall.reference.psi.get(k)), fmt(overall.reference.js.get(k)),
            fmt(overall.reference.ks.get(k)), missing, pct(overall.unseen.get(k)),
            fmt(previous.psi.get(k) if previous else None),
            fmt(previous.js.get(k) if previous else None),
            fmt(previous.ks.get(k) if previous else None),
        ])  # fmt: skip
    return rows


def _segment_rows(report: DriftReport) -> list[list[str]]:
    total = report.overall.rows or 1
    rows = []
    for label in segments_by_drift(report):
        d: PopulationDrift = report.segments[label]
        feature, value = worst_feature(d, [segment_column(label)])
        score = stats.SCORE_KEY
        rows.append([
            html.escape(label), f"{d.rows:,}", pct(d.rows / total),
            fmt(segment_drift(label, d)), fmt(d.reference.psi.get(score)),
            fmt(d.reference.js.get(score)), fmt(d.reference.ks.get(score)),
            html.escape(feature or "-"), fmt(value),
            pct(max(d.null_rate.values(), default=math.nan)),
            pct(max(d.unseen.values(), default=math.nan)),
            fmt(d.previous.psi.get(score) if d.previous else None),
        ])  # fmt: skip
    return rows


_METRIC_HEADER = ["", "PSI", "JS", "KS", "missing (training)", "unseen", "PSI vs previous",
                  "JS vs previous", "KS vs previous"]  # fmt: skip
_SEGMENT_HEADER = ["segment", "rows", "share", "drift", "score PSI", "score JS", "score KS",
                   "worst feature", "its PSI", "max missing", "max unseen",
                   "score PSI vs previous"]  # fmt: skip
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 24px; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }
svg { margin: 8px 16px 8px 0; font-family: system-ui, sans-serif; }
"""


def render_report(
    report: DriftReport,
    model: ModelHandle,
    pipeline: str,
    partition: str,
    previous_partition: str | None,
    warn: float,
    error: float,
    top_features: int = TOP_FEATURES,
) -> str:
    """The page: a header, every key's metrics, the histograms of the score and the
    `top_features` features with the largest PSI, then the segments with the worst one's score
    histogram."""
    features = {f.name: f for f in model.features}
    ranked = [k for k in largest_first(report.overall.reference.psi) if k != stats.SCORE_KEY]
    keys = [stats.SCORE_KEY, *ranked]

    def figure(k: str, current: Histogram, element: str, title: str) -> str:
        labels = bucket_labels(current.edges, features.get(k))
        return histogram_svg(element, title, labels, model.reference[k], current)

    current = report.profile.overall.histograms
    figures = [
        figure(k, current[k], f"histogram-{key_name(k)}",
               f"{key_name(k)}: PSI {fmt(report.overall.reference.psi.get(k))}")
        for k in [stats.SCORE_KEY, *ranked[:top_features]]
    ]  # fmt: skip
    previous = html.escape(previous_partition or "none")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(pipeline)} drift {html.escape(partition)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(pipeline)}: drift of {html.escape(partition)}</h1>",
        f"<p>Model version <code>{html.escape(report.model_version)}</code>, "
        f"{report.overall.rows:,} rows; compared with the training reference and the previous "
        f"partition ({previous}). PSI warns at {warn} and errors at {error}. JS is the "
        "Jensen-Shannon distance (base 2) over the same buckets, the missing one included; KS "
        "the Kolmogorov-Smirnov statistic on the training quantile buckets (a lower bound of "
        "the exact one); missing is null or NaN (training's in brackets); unseen is the share "
        "of categorical values the model was not trained on.</p>",
        "<h2>Metrics</h2>",
        _table(_METRIC_HEADER, _metric_rows(report, keys)),
        "<h2>Histograms</h2>",
        f'<p class="legend"><span style="background:{_REFERENCE_COLOUR}"></span>training '
        f'<span style="background:{_CURRENT_COLOUR}"></span>this partition</p>',
        "<div>" + "".join(figures) + "</div>",
    ]
    if report.segments:
        worst = segments_by_drift(report)[0]
        segment = report.profile.segments[worst]
        segment_psi = report.segments[worst].reference.psi.get(stats.SCORE_KEY)
        out += [
            "<h2>Segments</h2>",
            f"<p>Worst segment: <b>{html.escape(worst)}</b>. A segment's drift is its largest "
            "PSI vs training over the score and its features, its own column left out; "
            f"segments under {MIN_RANKED_ROWS} rows come after the others, their PSI being "
            "mostly sampling noise. Segments are compared with the whole training population "
            "and with the same segment the previous day.</p>",
            _table(_SEGMENT_HEADER, _segment_rows(report)),
            figure(
                stats.SCORE_KEY,
                segment.histograms[stats.SCORE_KEY],
                "histogram-worst-segment",
                f"{worst}: score, PSI {fmt(segment_psi)}",
            ),
        ]
    out.append("</body></html>")
    return "\n".join(out)


def write_report(object_store: ObjectStore, pipeline: str, partition: str, page: str) -> UPath:
    """The page at the partition's report path, replacing an earlier run's in one step."""
    target = report_path(object_store, pipeline, partition)
    tmp = temp_file_for(target)
    try:
        tmp.write_text(page, encoding="utf-8")
        place_file(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
