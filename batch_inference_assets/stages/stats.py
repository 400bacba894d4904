"""Distribution math shared by training, scoring and drift: fixed-edge histograms and PSI."""

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
