"""Drift stats: how the score and each feature moved against training and the previous partition
(PSI, Jensen-Shannon distance, KS statistic, null and unseen rates), whole and per segment."""

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from upath import UPath

from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.records import Histogram, ModelHandle
from batch_inference_assets.stages import stats
from batch_inference_assets.stages.drift_profile import Population, Profile

# Below this many rows a segment is listed but not ranked first: with ten buckets, a sample of
# n rows from an unchanged distribution already has a PSI of about 10/n.
MIN_RANKED_ROWS = 500


@dataclass(frozen=True)
class Distances:
    """Each key's distance from one baseline (training, or the previous partition): PSI and
    Jensen-Shannon for every key, KS for the numeric ones (the score and numeric features)."""

    psi: dict[str, float]
    js: dict[str, float]
    ks: dict[str, float]


@dataclass(frozen=True)
class PopulationDrift:
    """The partition's or one segment's drift: distances from training and from the previous
    partition's same population (None when there is none), and its missing and unseen shares."""

    rows: int
    reference: Distances
    previous: Distances | None
    null_rate: dict[str, float]  # per feature: null or NaN
    unseen: dict[str, float]  # per categorical feature: values outside the model's categories

    def to_doc(self) -> dict[str, object]:
        previous = self.previous
        return {
            "rows": self.rows,
            "vs_training": {"psi": self.reference.psi, "js": self.reference.js,
                            "ks": self.reference.ks},
            "vs_previous": {"psi": previous.psi, "js": previous.js, "ks": previous.ks}
            if previous else None,
            "null_rate": self.null_rate,
            "unseen": self.unseen,
        }  # fmt: skip


@dataclass(frozen=True)
class DriftReport:
    """A partition's drift: the whole of it, and each segment (none without segment_by)."""

    model_version: str
    profile: Profile
    overall: PopulationDrift
    segments: dict[str, PopulationDrift]  # by `<column>=<value>`, largest first
    null_rate_reference: dict[str, float]  # per feature, in the training reference

    @property
    def psi_reference(self) -> dict[str, float]:
        return self.overall.reference.psi

    @property
    def psi_previous(self) -> dict[str, float] | None:
        return self.overall.previous.psi if self.overall.previous else None

    def to_json(self) -> str:
        """The stored profile: what the next partition compares with, and every metric of the
        partition and of each segment."""
        segments = {
            k: {**p.to_doc(), "metrics": self.segments[k].to_doc()}
            for k, p in self.profile.segments.items()
        }
        return json.dumps(
            {
                "model_version": self.model_version,
                **self.profile.overall.to_doc(),
                "psi_reference": self.psi_reference,
                "psi_previous": self.psi_previous,
                "metrics": self.overall.to_doc(),
                "null_rate_reference": self.null_rate_reference,
                "segments": segments,
            }
        )


def numeric_keys(model: ModelHandle) -> set[str]:
    return {f.name for f in model.features if f.type == "float64"} | {stats.SCORE_KEY}


def distances(
    baseline: dict[str, Histogram], current: dict[str, Histogram], numeric: set[str]
) -> Distances:
    """The keys of `current` that `baseline` has too."""
    keys = [k for k in current if k in baseline]
    return Distances(
        psi={k: stats.psi(baseline[k], current[k]) for k in keys},
        js={k: stats.js_distance(baseline[k], current[k]) for k in keys},
        ks={k: stats.ks_statistic(baseline[k], current[k]) for k in keys if k in numeric},
    )


def population_drift(
    model: ModelHandle, current: Population, previous: Population | None
) -> PopulationDrift:
    numeric = numeric_keys(model)
    rows = current.rows or math.nan
    return PopulationDrift(
        rows=current.rows,
        reference=distances(model.reference, current.histograms, numeric),
        previous=distances(previous.histograms, current.histograms, numeric) if previous else None,
        null_rate={k: n / rows for k, n in current.nulls.items()},
        unseen={k: n / rows for k, n in current.unseen.items()},
    )


def drift_report(model: ModelHandle, profile: Profile, previous: Profile | None) -> DriftReport:
    before = previous.segments if previous else {}
    return DriftReport(
        model_version=model.version,
        profile=profile,
        overall=population_drift(model, profile.overall, previous.overall if previous else None),
        segments={
            label: population_drift(model, p, before.get(label))
            for label, p in profile.segments.items()
        },
        null_rate_reference={
            f.name: stats.missing_rate(model.reference[f.name]) for f in model.features
        },
    )


def profile_path(object_store: ObjectStore, pipeline: str, partition: str) -> UPath:
    return object_store.path(pipeline, "drift", f"{partition}.json")


def load_profile(path: UPath, model_version: str) -> Profile | None:
    """A stored partition's profile, if it exists and used the same model's edges (a profile
    written before segments has none)."""
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    if doc["model_version"] != model_version:
        return None
    segments = {k: Population.from_doc(p) for k, p in doc.get("segments", {}).items()}
    return Profile(model_version, Population.from_doc(doc), segments)


def previous_partition(day: date, start_date: date) -> str | None:
    """The daily partition before `day`, none for the first one."""
    return (day - timedelta(days=1)).isoformat() if day > start_date else None


def compare_with_previous(
    object_store: ObjectStore,
    pipeline: str,
    day: date,
    start_date: date,
    model: ModelHandle,
    profile: Profile,
) -> tuple[DriftReport, str | None]:
    """Drift of a partition's profile against training and the previous partition's stored
    profile (same model version only), saved as this partition's profile."""
    previous_key = previous_partition(day, start_date)
    previous = (
        load_profile(profile_path(object_store, pipeline, previous_key), model.version)
        if previous_key
        else None
    )
    report = drift_report(model, profile, previous)
    path = profile_path(object_store, pipeline, day.isoformat())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.to_json())
    return report, previous_key


def key_name(k: str) -> str:
    return "score" if k == stats.SCORE_KEY else k


def segment_column(label: str) -> str:
    return label.split("=", 1)[0]


def largest_first(values: dict[str, float]) -> list[str]:
    """Keys by value, largest first; NaN (nothing to compare) last."""
    return sorted(values, key=lambda k: math.inf if math.isnan(values[k]) else -values[k])


def worst_feature(drift: PopulationDrift, exclude: Iterable[str] = ()) -> tuple[str | None, float]:
    """The feature with the largest PSI vs training, leaving out `exclude` (a segment's own
    column: within one region, the region feature has moved by construction)."""
    skip = {stats.SCORE_KEY, *exclude}
    features = {k: v for k, v in drift.reference.psi.items() if k not in skip}
    ranked = largest_first(features)
    return (ranked[0], features[ranked[0]]) if ranked else (None, math.nan)


def segment_drift(label: str, drift: PopulationDrift) -> float:
    """How much a segment moved: its largest PSI vs training over the score and its features
    (its own column left out); NaN when nothing compares."""
    _, feature = worst_feature(drift, [segment_column(label)])
    values = [v for v in (drift.reference.psi.get(stats.SCORE_KEY, math.nan), feature)
              if not math.isnan(v)]  # fmt: skip
    return max(values) if values else math.nan


def segments_by_drift(report: DriftReport) -> list[str]:
    """Segments by how much they moved, largest first; those under MIN_RANKED_ROWS rows after
    all the others, so the worst segment named is not a small one's sampling noise."""
    ranked = largest_first({k: segment_drift(k, d) for k, d in report.segments.items()})
    return sorted(ranked, key=lambda k: report.segments[k].rows < MIN_RANKED_ROWS)


def metric_metadata(report: DriftReport) -> dict[str, float | int]:
    """What the UI plots over partitions. Per key: `psi/<k>`, `js/<k>`, `ks/<k>` (numeric) vs
    training and `psi_vs_previous/<k>`; the score's `js_vs_previous`/`ks_vs_previous`; per
    feature `null_rate/<f>` and, categorical, `unseen/<f>`. Per segment, only `rows/<s>` and
    `psi/<s>/score`, `js/<s>/score`, `psi/<s>/max_feature` (the largest feature PSI)."""
    overall = report.overall
    out: dict[str, float | int] = {}
    for metric, values in (("psi", overall.reference.psi), ("js", overall.reference.js),
                           ("ks", overall.reference.ks)):  # fmt: skip
        out |= {f"{metric}/{key_name(k)}": v for k, v in values.items()}
    if overall.previous:
        out |= {f"psi_vs_previous/{key_name(k)}": v for k, v in overall.previous.psi.items()}
        for metric, values in (("js", overall.previous.js), ("ks", overall.previous.ks)):
            if stats.SCORE_KEY in values:
                out[f"{metric}_vs_previous/score"] = values[stats.SCORE_KEY]
    out |= {f"null_rate/{k}": v for k, v in overall.null_rate.items()}
    out |= {f"unseen/{k}": v for k, v in overall.unseen.items()}
    for label, drift in report.segments.items():
        out[f"rows/{label}"] = drift.rows
        out[f"psi/{label}/score"] = drift.reference.psi.get(stats.SCORE_KEY, math.nan)
        out[f"js/{label}/score"] = drift.reference.js.get(stats.SCORE_KEY, math.nan)
        out[f"psi/{label}/max_feature"] = worst_feature(drift, [segment_column(label)])[1]
    return out


def fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1%}"


SUMMARY_CHARS = 990


def summary_markdown(
    report: DriftReport, warn: float, error: float, worst: int = 5, worst_segments: int = 5
) -> str:
    """The drift page's lead: the score, then the features that moved most, each with its PSI,
    JS distance, KS statistic, missing rate (training's in brackets) and unseen share; then,
    with segments, the worst segment named and the segments that moved most."""

    def verdict(value: float) -> str:
        if math.isnan(value):  # nothing to compare
            return "n/a"
        return "ERROR" if value >= error else "warn" if value >= warn else "ok"

    overall = report.overall
    previous = report.psi_previous or {}
    features = largest_first({k: v for k, v in report.psi_reference.items()
                               if k != stats.SCORE_KEY})  # fmt: skip
    rows = [("score", stats.SCORE_KEY)] + [(k, k) for k in features[:worst]]
    lines = [
        f"PSI against training (warn at {warn}, error at {error}) and the previous day.",
        "",
        "| | vs training | | JS | KS | missing (training) | unseen | vs previous day |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, key in rows:
        value = report.psi_reference[key]
        missing = (
            f"{pct(overall.null_rate[key])} ({pct(report.null_rate_reference.get(key))})"
            if key in overall.null_rate
            else "-"
        )
        lines.append(
            f"| **{label}** | {fmt(value)} | {verdict(value)} "
            f"| {fmt(overall.reference.js.get(key))} | {fmt(overall.reference.ks.get(key))} "
            f"| {missing} | {pct(overall.unseen.get(key))} | {fmt(previous.get(key))} |"
        )
    if len(features) > worst:
        lines.append(f"\n{len(features) - worst} more features: see `psi/<feature>`.")
    if report.segments:
        lines += ["", segment_markdown(report, worst_segments)[0]]
    legend = (
        "\nJS: Jensen-Shannon distance (base 2) and KS: Kolmogorov-Smirnov statistic, vs "
        "training; KS on the training quantile buckets (a lower bound of the exact one). "
        "Missing: null or NaN; unseen: categories the model was not trained on."
    )
    # The UI shows Markdown under 1,000 characters on the page, longer behind a link: the
    # lead stays on the page (the legend and feature rows go first when it would not fit).
    while len("\n".join(lines)) > SUMMARY_CHARS and len(rows) > 1:
        rows.pop()
        del lines[4 + len(rows)]
    text = "\n".join(lines)
    return text + legend if len(text + legend) <= SUMMARY_CHARS else text


def segments_markdown(report: DriftReport, worst: int = 5) -> str | None:
    """The segments that moved most (`segments` in the metadata), None without segments."""
    return "\n".join(segment_markdown(report, worst)) if report.segments else None


def _cell(text: str) -> str:
    """A segment value as Markdown table text: its own `|` must not end the cell."""
    return text.replace("|", "\\|")


def segment_markdown(report: DriftReport, worst: int = 5) -> list[str]:
    """The worst segment named, then the segments that moved most."""
    ranked = segments_by_drift(report)
    top = ranked[0]
    drift = report.segments[top]
    feature, value = worst_feature(drift, [segment_column(top)])
    score = drift.reference.psi.get(stats.SCORE_KEY, math.nan)
    lines = [
        f"**Worst segment: {_cell(top)}** ({drift.rows:,} rows): score PSI {fmt(score)}"
        + (f", largest feature PSI {fmt(value)} ({feature})." if feature else "."),
        "",
        "| segment | rows | score PSI | score JS | score KS | worst feature | its PSI "
        "| score PSI vs previous day |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in ranked[:worst]:
        d = report.segments[label]
        feature, value = worst_feature(d, [segment_column(label)])
        before = d.previous.psi.get(stats.SCORE_KEY) if d.previous else None
        lines.append(
            f"| {_cell(label)} | {d.rows:,} | {fmt(d.reference.psi.get(stats.SCORE_KEY))} "
            f"| {fmt(d.reference.js.get(stats.SCORE_KEY))} "
            f"| {fmt(d.reference.ks.get(stats.SCORE_KEY))} | {feature or '-'} | {fmt(value)} "
            f"| {fmt(before)} |"
        )
    if len(ranked) > worst:
        lines.append(f"\n{len(ranked) - worst} more segments: see `psi/<segment>/score`.")
    return lines


def worst_segment(report: DriftReport) -> str | None:
    """The segment that moved most (see `segment_drift`); None without segments."""
    ranked = segments_by_drift(report)
    return ranked[0] if ranked else None
