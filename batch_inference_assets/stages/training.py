"""The candidate model: train on a labelled window, compare with the champion on the same holdout,
and promote only through the gate."""

import time
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_assets.io.warehouse import Warehouse
from batch_inference_assets.models import kinds
from batch_inference_assets.models.lightgbm_model import (
    HIGHER_IS_BETTER,
    encode_labels,
    metrics_for,
    train_lightgbm,
)
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.models.store import ModelStore, ModelStoreError
from batch_inference_assets.records import CandidateModel, Promotion
from batch_inference_assets.spec import PipelineSpec, TrainingSpec
from batch_inference_assets.sql import SqlTemplate


class TrainingError(ValueError):
    pass


def window(training: TrainingSpec, end: date) -> tuple[date, date, date]:
    """(start, holdout start, end): end exclusive; the last holdout_days are the holdout."""
    return (
        end - timedelta(days=training.window_days),
        end - timedelta(days=training.holdout_days),
        end,
    )


def labelled_rows(spec: PipelineSpec, warehouse: Warehouse, start: date, end: date) -> pa.Table:
    assert spec.training is not None
    sql, params = SqlTemplate.parse(spec.training.sql).render(
        schema=warehouse.feature_schema, values={"window_start": start, "window_end": end}
    )
    return warehouse.query(sql, params)


def split(
    table: pa.Table, training: TrainingSpec, holdout_start: date
) -> tuple[pa.Table, pa.Table]:
    for column in (training.label, training.date_column):
        if column not in table.column_names:
            raise TrainingError(f"training rows have no {column!r} column")
    days = table.column(training.date_column).cast(pa.date32())
    in_holdout = pc.greater_equal(days, pa.scalar(holdout_start, pa.date32()))
    train, holdout = table.filter(pc.invert(in_holdout)), table.filter(in_holdout)
    if train.num_rows == 0 or holdout.num_rows == 0:
        raise TrainingError(
            f"{train.num_rows} training and {holdout.num_rows} holdout rows: both must be non-empty"
        )
    return train, holdout


def champion_metric(
    spec: PipelineSpec, model_store: ModelStore, holdout: pa.Table
) -> tuple[str | None, float | None]:
    """The current champion's version and metric on the candidate's holdout (None, None
    when there is no champion yet)."""
    assert spec.training is not None
    training = spec.training
    try:
        champion = model_store.load(spec.model.name, training.promote_alias)
    except ModelStoreError:
        return None, None
    missing = [f.name for f in champion.features if f.name not in holdout.column_names]
    if missing:
        raise TrainingError(
            f"champion {champion.version} cannot be scored on this holdout: missing {missing}"
        )
    predictor = kinds.load_predictor(champion.kind, model_store.read_model_text(champion), 0)
    raw = np.asarray(predictor.predict(feature_matrix(holdout, champion.features)), np.float64)
    y = encode_labels(champion.kind, holdout.column(training.label), champion.classes)
    value = metrics_for(champion.kind, y, raw, len(champion.classes)).get(training.metric)
    if value is None:
        raise TrainingError(
            f"champion {champion.version} ({champion.kind}) has no {training.metric}"
        )
    return champion.version, value


def train_candidate(
    spec: PipelineSpec, warehouse: Warehouse, model_store: ModelStore, end: date
) -> CandidateModel:
    """Train, store the candidate as a version (no alias yet), and measure the champion."""
    training = spec.training
    if training is None:
        raise TrainingError("the pipeline has no training section")
    if spec.model.kind not in kinds.LIGHTGBM_KINDS:
        raise TrainingError(f"{spec.model.kind} models are registered, not trained here")
    start, holdout_start, end = window(training, end)
    started = time.perf_counter()
    rows = labelled_rows(spec, warehouse, start, end)
    train, holdout = split(rows, training, holdout_start)
    features = [
        c for c in rows.column_names if c not in (training.label, training.date_column)
        and c not in spec.features.id_columns
    ]  # fmt: skip
    trained = train_lightgbm(
        spec.model.kind, train, holdout, features, training.label,
        training.num_boost_round, dict(training.params),
    )  # fmt: skip
    value = trained.metrics.get(f"holdout_{training.metric}")
    if value is None:
        raise TrainingError(f"{spec.model.kind} models have no {training.metric} metric")
    champion_version, champion_value = champion_metric(spec, model_store, holdout)
    version = model_store.save(
        spec.model.name,
        trained,
        aliases=("candidate",),
        extra={
            "training_window": {
                "start": start.isoformat(),
                "holdout_start": holdout_start.isoformat(),
                "end": end.isoformat(),
            },
            "pipeline": spec.name,
        },
    )
    return CandidateModel(
        pipeline=spec.name,
        model=spec.model.name,
        version=version,
        kind=spec.model.kind,
        metric=training.metric,
        value=value,
        higher_is_better=HIGHER_IS_BETTER[training.metric],
        threshold=training.threshold,
        tolerance=training.tolerance,
        champion_version=champion_version,
        champion_value=champion_value,
        window_start=start.isoformat(),
        window_end=end.isoformat(),
        train_rows=train.num_rows,
        holdout_rows=holdout.num_rows,
        seconds=round(time.perf_counter() - started, 3),
    )


def gate(c: CandidateModel) -> tuple[bool, str]:
    """Promote only if the metric clears the threshold and is not worse than the champion's
    (on the same holdout) by more than the tolerance."""
    sign = 1.0 if c.higher_is_better else -1.0
    clears = sign * (c.value - c.threshold) >= 0
    word = "at least" if c.higher_is_better else "at most"
    reasons = [f"{c.metric} {c.value:.4f} (needs {word} {c.threshold})"]
    keeps_up = True
    if c.champion_value is not None and c.champion_version != c.version:
        keeps_up = sign * (c.value - c.champion_value) >= -c.tolerance
        reasons.append(
            f"champion {c.champion_version}: {c.champion_value:.4f} (tolerance {c.tolerance})"
        )
    passed = clears and keeps_up
    verdict = "promote" if passed else "reject"
    return passed, f"{verdict} candidate {c.version}: " + "; ".join(reasons)


def shadow_gate(c: CandidateModel, days: int, needed: int) -> tuple[bool, str]:
    """With training.shadow_days: the candidate must have been scored in the champion's shadow,
    on the same rows, on `needed` days (it has `days`)."""
    if days >= needed:
        return True, f"{days} days in the shadow (needs {needed})"
    return False, (
        f"{days} of the {needed} days in the shadow it needs: scored as a challenger from now on; "
        "run the training for the same window again once it has them"
    )


def promote(model_store: ModelStore, model: str, alias: str, version: str) -> Promotion:
    """Move `alias` to a version that passed the gate, remembering where it pointed."""
    try:
        previous: str | None = model_store.resolve(model, alias)
    except ModelStoreError:
        previous = None
    model_store.set_alias(model, alias, version)
    return Promotion(model=model, alias=alias, version=version, previous=previous)
