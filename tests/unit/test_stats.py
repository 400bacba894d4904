import math

import numpy as np
import pytest

from batch_inference_assets.records import FeatureInfo, Histogram
from batch_inference_assets.stages import stats


def test_bucket_counts_put_missing_last() -> None:
    counts = stats.bucket_counts(np.array([0.0, 1.0, 1.5, 2.0, np.nan, 5.0]), [1.0, 2.0])
    # (-inf,1) [1,2) [2,inf) missing
    assert counts.tolist() == [1, 2, 2, 1]


def test_categorical_edges_bucket_each_code() -> None:
    f = FeatureInfo(name="c", type="string", categories=["a", "b", "c"])
    edges = stats.edges_for(f, np.array([0.0]))
    assert stats.bucket_counts(np.array([0, 1, 1, 2, np.nan]), edges).tolist() == [1, 2, 1, 1]


def test_psi_is_zero_for_the_same_distribution_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 50_000)
    edges = stats.quantile_edges(ref)
    base = stats.histogram(ref, edges)
    same = stats.histogram(rng.normal(0, 1, 50_000), edges)
    small = stats.histogram(rng.normal(0.2, 1, 50_000), edges)
    large = stats.histogram(rng.normal(1.0, 1, 50_000), edges)
    assert stats.psi(base, same) < 0.01
    assert 0.01 < stats.psi(base, small) < stats.psi(base, large)
    assert stats.psi(base, large) > 0.25


def test_merge_and_mismatched_edges() -> None:
    a = Histogram(edges=[1.0], counts=[1, 2, 3])
    b = Histogram(edges=[1.0], counts=[4, 5, 6])
    assert stats.merge([a, b]).counts == [5, 7, 9]
    with pytest.raises(ValueError, match="different edges"):
        stats.merge([a, Histogram(edges=[2.0], counts=[0, 0, 0])])


def test_psi_of_empty_is_nan() -> None:
    a = Histogram(edges=[1.0], counts=[0, 0, 0])
    assert math.isnan(stats.psi(a, Histogram(edges=[1.0], counts=[1, 0, 0])))
