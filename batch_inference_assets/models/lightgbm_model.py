"""LightGBM models (binary, multiclass, regression): deterministic training with a drift
reference and holdout metrics, and prediction."""

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.records import FeatureInfo, Histogram
from batch_inference_assets.stages import stats

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
    kind: str = "lightgbm_binary"
    classes: list[str] = field(default_factory=list)


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


# Holdout metrics by kind, and whether higher is better (for the promotion gate).
KIND_METRICS = {
    "lightgbm_binary": ("auc", "logloss"),
    "lightgbm_multiclass": ("accuracy", "logloss"),
    "lightgbm_regression": ("rmse", "mae"),
}
HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "logloss": False, "rmse": False, "mae": False}
OBJECTIVES = {
    "lightgbm_binary": "binary",
    "lightgbm_multiclass": "multiclass",
    "lightgbm_regression": "regression",
}


def label_classes(column: pa.ChunkedArray | pa.Array) -> list[str]:
    return sorted({str(v) for v in column.to_pylist() if v is not None})


def encode_labels(kind: str, column: pa.ChunkedArray | pa.Array, classes: list[str]) -> np.ndarray:
    if kind == "lightgbm_multiclass":
        index = {c: i for i, c in enumerate(classes)}
        try:
            return np.array([index[str(v)] for v in column.to_pylist()], dtype=np.float64)
        except KeyError as err:
            raise ValueError(f"label {err} is not one of the training classes {classes}") from err
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def primary_score(kind: str, raw: np.ndarray, n_classes: int) -> np.ndarray:
    """The `score` column: P(1), the argmax probability, or the regression value."""
    if kind == "lightgbm_multiclass":
        return np.asarray(raw.reshape(-1, n_classes).max(axis=1), dtype=np.float64)
    return np.asarray(raw, dtype=np.float64)


def metrics_for(kind: str, y: np.ndarray, raw: np.ndarray, n_classes: int = 0) -> dict[str, float]:
    """Holdout metrics of one kind (y encoded as in training)."""
    eps = 1e-15
    if kind == "lightgbm_binary":
        p = np.clip(raw, eps, 1 - eps)
        logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        return {"auc": auc(y, raw), "logloss": logloss}
    if kind == "lightgbm_multiclass":
        probs = raw.reshape(-1, n_classes)
        idx = y.astype(np.int64)
        picked = np.clip(probs[np.arange(len(idx)), idx], eps, 1.0)
        return {
            "accuracy": float((probs.argmax(axis=1) == idx).mean()),
            "logloss": float(-np.mean(np.log(picked))),
        }
    err = raw - y
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def drift_reference(
    x: np.ndarray, features: list[FeatureInfo], scores: np.ndarray
) -> dict[str, Histogram]:
    """What drift compares each partition with: every feature's and the score's distribution."""
    reference = {
        f.name: stats.histogram(x[:, j], stats.edges_for(f, x[:, j]))
        for j, f in enumerate(features)
    }
    reference[stats.SCORE_KEY] = stats.histogram(scores, stats.quantile_edges(scores))
    return reference


def train_lightgbm(
    kind: str,
    train: pa.Table,
    holdout: pa.Table,
    feature_names: list[str],
    label: str,
    num_boost_round: int = 100,
    params: dict[str, Any] | None = None,
) -> TrainedModel:
    """Train on `train`, report metrics on `holdout` (prefixed holdout_), keep a drift reference."""
    if kind not in OBJECTIVES:
        raise ValueError(f"cannot train a {kind!r} model with LightGBM")
    features = infer_features(train, feature_names)
    x = feature_matrix(train, features)
    classes = label_classes(train.column(label)) if kind == "lightgbm_multiclass" else []
    y = encode_labels(kind, train.column(label), classes)
    categorical = [j for j, f in enumerate(features) if f.type == "string"]
    dataset = lgb.Dataset(
        x, label=y, feature_name=feature_names, categorical_feature=categorical or "auto"
    )
    settings = {**DEFAULT_PARAMS, "objective": OBJECTIVES[kind], **(params or {})}
    if classes:
        settings["num_class"] = len(classes)
    booster = lgb.train(settings, dataset, num_boost_round)

    train_raw = np.asarray(booster.predict(x), dtype=np.float64)
    reference = drift_reference(x, features, primary_score(kind, train_raw, len(classes)))
    hx = feature_matrix(holdout, features)
    hy = encode_labels(kind, holdout.column(label), classes)
    holdout_raw = np.asarray(booster.predict(hx), dtype=np.float64)
    metrics = {
        **{f"train_{k}": v for k, v in metrics_for(kind, y, train_raw, len(classes)).items()},
        **{f"holdout_{k}": v for k, v in metrics_for(kind, hy, holdout_raw, len(classes)).items()},
        "train_rows": float(train.num_rows),
        "holdout_rows": float(holdout.num_rows),
    }
    return TrainedModel(booster.model_to_string(), features, reference, metrics, kind, classes)


class LightGBMPredictor:
    """Scores a feature matrix with a LightGBM booster; `threads` bounds its CPU use."""

    def __init__(self, model_text: str, threads: int = 0) -> None:
        self.booster = lgb.Booster(model_str=model_text)
        self.threads = threads

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, num_threads=self.threads), dtype=np.float64)
