"""Drift stats: PSI of the score and each feature against training and the previous partition."""

import json
import math
from dataclasses import dataclass
from datetime import date, timedelta

from upath import UPath

from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.records import Histogram, ModelHandle, ScoredShards
from batch_inference_assets.stages import stats


@dataclass(frozen=True)
class DriftReport:
    model_version: str
    histograms: dict[str, Histogram]
    psi_reference: dict[str, float]
    psi_previous: dict[str, float] | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "model_version": self.model_version,
                "histograms": {k: h.model_dump() for k, h in self.histograms.items()},
                "psi_reference": self.psi_reference,
                "psi_previous": self.psi_previous,
            }
        )


def profile_path(object_store: ObjectStore, pipeline: str, partition: str) -> UPath:
    return object_store.path(pipeline, "drift", f"{partition}.json")


def load_histograms(path: UPath, model_version: str) -> dict[str, Histogram] | None:
    """A stored partition's histograms, if they exist and used the same model's edges."""
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    if doc["model_version"] != model_version:
        return None
    return {k: Histogram.model_validate(h) for k, h in doc["histograms"].items()}


def drift_report(
    model: ModelHandle, scored: ScoredShards, previous: dict[str, Histogram] | None
) -> DriftReport:
    keys = list(model.reference)
    current = {k: stats.merge(s.histograms[k] for s in scored.shards) for k in keys}
    psi_reference = {k: stats.psi(model.reference[k], current[k]) for k in keys}
    psi_previous = (
        {k: stats.psi(previous[k], current[k]) for k in keys if k in previous} if previous else None
    )
    return DriftReport(model.version, current, psi_reference, psi_previous)


def previous_partition(day: date, start_date: date) -> str | None:
    """The daily partition before `day`, none for the first one."""
    return (day - timedelta(days=1)).isoformat() if day > start_date else None


def compare_with_previous(
    object_store: ObjectStore,
    pipeline: str,
    day: date,
    start_date: date,
    model: ModelHandle,
    scored: ScoredShards,
) -> tuple[DriftReport, str | None]:
    """Drift of a scored partition against training and the previous partition's stored
    profile (same model version only), saved as this partition's profile."""
    previous_key = previous_partition(day, start_date)
    previous = (
        load_histograms(profile_path(object_store, pipeline, previous_key), model.version)
        if previous_key
        else None
    )
    report = drift_report(model, scored, previous)
    path = profile_path(object_store, pipeline, day.isoformat())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.to_json())
    return report, previous_key


def psi_metadata(report: DriftReport) -> dict[str, float]:
    """`psi/<feature>` and `psi_vs_previous/<feature>` (the score as `score`), for plots."""

    def name(k: str) -> str:
        return "score" if k == stats.SCORE_KEY else k

    out = {f"psi/{name(k)}": v for k, v in report.psi_reference.items()}
    for k, v in (report.psi_previous or {}).items():
        out[f"psi_vs_previous/{name(k)}"] = v
    return out


def summary_markdown(report: DriftReport, warn: float, error: float, worst: int = 5) -> str:
    """The drift page's lead: the score's PSI, then the features that moved most."""

    def verdict(value: float) -> str:
        if math.isnan(value):  # nothing to compare
            return "n/a"
        return "ERROR" if value >= error else "warn" if value >= warn else "ok"

    def fmt(value: float | None) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.4f}"

    previous = report.psi_previous or {}

    def largest_first(k: str) -> float:
        value = report.psi_reference[k]
        return math.inf if math.isnan(value) else -value  # nothing to compare: listed last

    features = sorted((k for k in report.psi_reference if k != stats.SCORE_KEY), key=largest_first)
    rows = [("score", stats.SCORE_KEY)] + [(k, k) for k in features[:worst]]
    lines = [
        f"PSI against training (warn at {warn}, error at {error}) and the previous day.",
        "",
        "| | vs training | | vs previous day |",
        "|---|---|---|---|",
    ]
    for label, key in rows:
        value = report.psi_reference[key]
        lines.append(
            f"| **{label}** | {fmt(value)} | {verdict(value)} | {fmt(previous.get(key))} |"
        )
    if len(features) > worst:
        lines.append(f"\n{len(features) - worst} more features: see `psi/<feature>`.")
    return "\n".join(lines)
