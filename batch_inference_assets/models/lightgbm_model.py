"""LightGBM binary classifiers: deterministic training with a drift reference, and prediction."""

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_assets import stats
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.records import FeatureInfo, Histogram

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "seed": 7,
    "verbose": -1,
}


@dataclass(frozen=True)
class TrainedModel:
    model_text: str
    features: list[FeatureInfo]
    reference: dict[str, Histogram]
    metrics: dict[str, float]


def infer_features(table: pa.Table, names: list[str]) -> list[FeatureInfo]:
    """Numeric columns become float64 features; string columns categorical, categories sorted."""
    features = []
    for name in names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            cats = sorted(v for v in pc.unique(col).to_pylist() if v is not None)
            features.append(FeatureInfo(name=name, type="string", categories=cats))
        elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            features.append(FeatureInfo(name=name, type="float64"))
        else:
            raise ValueError(f"feature {name!r} has unsupported type {col.type}")
    return features


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Rank-based ROC AUC (ties averaged)."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    ranks[order] = np.arange(1, len(p) + 1)
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    n_pos = float(y.sum())
    n_neg = float(len(y) - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_binary(
    train: pa.Table,
    holdout: pa.Table,
    feature_names: list[str],
    label: str,
    num_boost_round: int = 100,
    params: dict[str, Any] | None = None,
) -> TrainedModel:
    features = infer_features(train, feature_names)
    x = feature_matrix(train, features)
    y = train.column(label).to_numpy().astype(np.float64)
    categorical = [j for j, f in enumerate(features) if f.type == "string"]
    dataset = lgb.Dataset(
        x, label=y, feature_name=feature_names, categorical_feature=categorical or "auto"
    )
    booster = lgb.train({**DEFAULT_PARAMS, **(params or {})}, dataset, num_boost_round)

    train_scores = np.asarray(booster.predict(x), dtype=np.float64)
    reference = {
        f.name: stats.histogram(x[:, j], stats.edges_for(f, x[:, j]))
        for j, f in enumerate(features)
    }
    reference[stats.SCORE_KEY] = stats.histogram(train_scores, stats.quantile_edges(train_scores))
    hx = feature_matrix(holdout, features)
    hy = holdout.column(label).to_numpy()
    metrics = {
        "train_auc": auc(y, train_scores),
        "holdout_auc": auc(hy, np.asarray(booster.predict(hx), dtype=np.float64)),
        "train_rows": float(train.num_rows),
        "holdout_rows": float(holdout.num_rows),
    }
    return TrainedModel(booster.model_to_string(), features, reference, metrics)


class BinaryPredictor:
    """Scores a feature matrix with a LightGBM booster; `threads` bounds its CPU use."""

    def __init__(self, model_text: str, threads: int = 0) -> None:
        self.booster = lgb.Booster(model_str=model_text)
        self.threads = threads

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_threads=self.threads), dtype=np.float64)
