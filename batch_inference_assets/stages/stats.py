"""Distribution math shared by training, scoring and drift: fixed-edge histograms, and the
distances between two of them (PSI, Jensen-Shannon, Kolmogorov-Smirnov) and their missing share."""

import math
from collections.abc import Iterable

import numpy as np

from batch_inference_assets.records import FeatureInfo, Histogram

SCORE_KEY = "__score__"
_QUANTILES = np.linspace(0.1, 0.9, 9)
_PSI_EPSILON = 1e-4


def quantile_edges(values: np.ndarray) -> list[float]:
    """Decile edges of the non-missing values (deduplicated); empty when all are missing."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return []
    return sorted({float(q) for q in np.quantile(finite, _QUANTILES)})


def category_edges(n_categories: int) -> list[float]:
    """Edges that put category code k (0..n-1) in bucket k."""
    return [k + 0.5 for k in range(n_categories - 1)]


def edges_for(feature: FeatureInfo, values: np.ndarray) -> list[float]:
    if feature.type == "string":
        return category_edges(len(feature.categories))
    return quantile_edges(values)


def bucket_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts per bucket: len(edges)+1 value buckets, then one bucket for NaN (missing/unknown)."""
    missing = np.isnan(values)
    counts = np.zeros(len(edges) + 2, dtype=np.int64)
    present = values[~missing]
    if present.size:
        idx = np.searchsorted(np.asarray(edges, dtype=np.float64), present, side="right")
        counts[: len(edges) + 1] = np.bincount(idx, minlength=len(edges) + 1)
    counts[-1] = int(missing.sum())
    return counts


def histogram(values: np.ndarray, edges: list[float]) -> Histogram:
    return Histogram(edges=list(edges), counts=bucket_counts(values, edges).tolist())


def merge(histograms: Iterable[Histogram]) -> Histogram:
    items = list(histograms)
    if not items:
        raise ValueError("no histograms to merge")
    edges = items[0].edges
    total = np.zeros(len(items[0].counts), dtype=np.int64)
    for h in items:
        if h.edges != edges:
            raise ValueError("cannot merge histograms with different edges")
        total += np.asarray(h.counts, dtype=np.int64)
    return Histogram(edges=edges, counts=total.tolist())


def psi(expected: Histogram, actual: Histogram) -> float:
    """Population stability index of `actual` against `expected` (same edges)."""
    if expected.edges != actual.edges:
        raise ValueError("PSI needs histograms over the same edges")
    e = np.asarray(expected.counts, dtype=np.float64)
    a = np.asarray(actual.counts, dtype=np.float64)
    if e.sum() == 0 or a.sum() == 0:
        return math.nan
    e = np.clip(e / e.sum(), _PSI_EPSILON, None)
    a = np.clip(a / a.sum(), _PSI_EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _counts(expected: Histogram, actual: Histogram, what: str) -> tuple[np.ndarray, np.ndarray]:
    if expected.edges != actual.edges:
        raise ValueError(f"{what} needs histograms over the same edges")
    e = np.asarray(expected.counts, dtype=np.float64)
    a = np.asarray(actual.counts, dtype=np.float64)
    return e, a


def js_distance(expected: Histogram, actual: Histogram) -> float:
    """Jensen-Shannon distance (base 2, so in [0, 1]) over every bucket, the missing one
    included; NaN when either side is empty. Unlike PSI it needs no epsilon: an empty bucket on
    one side contributes its finite share."""
    e, a = _counts(expected, actual, "Jensen-Shannon")
    if e.sum() == 0 or a.sum() == 0:
        return math.nan
    p, q = e / e.sum(), a / a.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def ks_statistic(expected: Histogram, actual: Histogram) -> float:
    """Kolmogorov-Smirnov statistic of the present (non-missing) values, from both CDFs at the
    bucket edges: a lower bound of the exact statistic, which may peak between two edges. NaN
    when either side has no present value."""
    e, a = _counts(expected, actual, "KS")
    e, a = e[:-1], a[:-1]  # the missing bucket is not a value
    if e.sum() == 0 or a.sum() == 0:
        return math.nan
    # The last bucket's cumulative share is 1 on both sides: only the edges can differ.
    cdf_e, cdf_a = np.cumsum(e)[:-1] / e.sum(), np.cumsum(a)[:-1] / a.sum()
    return float(np.max(np.abs(cdf_e - cdf_a), initial=0.0))


def missing_rate(h: Histogram) -> float:
    """The share of the last bucket (null, NaN, or for a categorical also an unseen value)."""
    total = sum(h.counts)
    return h.counts[-1] / total if total else math.nan
