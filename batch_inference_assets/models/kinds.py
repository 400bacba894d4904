"""Model kinds: how a model's raw predictions become the output table's columns.

lightgbm_binary      score = P(class 1); label (int64) = score >= label_threshold
lightgbm_multiclass  prob_<class> (float64) per declared class; label (string) = the argmax
                     class; score = the argmax probability
lightgbm_regression  score = the prediction
python               a registered `predict_fn(pandas.DataFrame) -> pandas.DataFrame` returns
                     every declared model-output column (score included), checked batch by batch
"""

import hashlib
import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from batch_inference_assets.contracts import Contract
from batch_inference_assets.models.lightgbm_model import LightGBMPredictor
from batch_inference_assets.records import ModelHandle
from batch_inference_assets.spec import LABEL_COLUMN as LABEL
from batch_inference_assets.spec import PROB_PREFIX
from batch_inference_assets.spec import SCORE_COLUMN as SCORE

LIGHTGBM_KINDS = ("lightgbm_binary", "lightgbm_multiclass", "lightgbm_regression")


class ModelOutputError(ValueError):
    """A model's output does not fit the declared output columns."""


def prob_column(cls: str) -> str:
    return f"{PROB_PREFIX}{cls}"


# --- python models: a callable registered by import path, pinned to its source -----------------


def import_predict_fn(path: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"predict_fn {path!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import predict_fn {path!r}: {err}") from err
    if not callable(fn):
        raise ValueError(f"predict_fn {path!r} is not callable")
    return fn


def source_sha256(path: str) -> str:
    """The hash of the source of predict_fn's module: a code change is a new model version."""
    module = importlib.import_module(path.partition(":")[0])
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()


def python_model_text(path: str) -> str:
    """What the model store keeps as the model file of a python model."""
    import_predict_fn(path)
    return json.dumps({"predict_fn": path, "source_sha256": source_sha256(path)}, sort_keys=True)


class PythonPredictor:
    kind = "python"

    def __init__(self, model_text: str) -> None:
        entry = json.loads(model_text)
        self.path: str = entry["predict_fn"]
        self.fn = import_predict_fn(self.path)
        now = source_sha256(self.path)
        if now != entry["source_sha256"]:
            raise ValueError(
                f"the source of {self.path} changed since this version was registered "
                f"({entry['source_sha256'][:12]} -> {now[:12]}): register it again"
            )

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.fn(frame)


def load_predictor(kind: str, model_text: str, threads: int = 0) -> Any:
    """A predictor for a stored model file; raises on anything that cannot be loaded."""
    if kind == "python":
        return PythonPredictor(model_text)
    if kind in LIGHTGBM_KINDS:
        return LightGBMPredictor(model_text, threads)
    raise ValueError(f"unknown model kind {kind!r}")


# --- turning predictions into output columns ----------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One batch's model outputs: `score` and the other model-output columns, by name."""

    score: np.ndarray
    columns: dict[str, pa.Array]


class Scorer:
    """kind + predictor + declared output -> Scored, batch by batch."""

    def __init__(
        self,
        model: ModelHandle,
        predictor: Any,
        output: Contract,
        produced: list[str],
    ) -> None:
        self.model = model
        self.predictor = predictor
        self.produced = produced  # what this model must produce besides the system columns
        self.schema = output.arrow_schema()

    def score(self, batch: pa.RecordBatch, x: np.ndarray) -> Scored:
        kind = self.model.kind
        if kind == "python":
            return self._python(batch)
        raw = np.asarray(self.predictor.predict(x), dtype=np.float64)
        cols: dict[str, pa.Array] = {}
        if kind == "lightgbm_multiclass":
            probs = raw.reshape(len(x), len(self.model.classes))
            best = probs.argmax(axis=1)
            for i, cls in enumerate(self.model.classes):
                if prob_column(cls) in self.produced:
                    cols[prob_column(cls)] = pa.array(probs[:, i], type=pa.float64())
            if LABEL in self.produced:
                cols[LABEL] = pa.array(np.asarray(self.model.classes, dtype=object)[best])
            return Scored(probs[np.arange(len(best)), best], cols)
        if kind == "lightgbm_binary" and LABEL in self.produced:
            cols[LABEL] = pa.array((raw >= self.model.label_threshold).astype(np.int64))
        return Scored(raw, cols)

    def _python(self, batch: pa.RecordBatch) -> Scored:
        frame = batch.select([f.name for f in self.model.features]).to_pandas()
        where = f"predict_fn {self.predictor.path}"
        try:
            out = self.predictor.predict_frame(frame)
        except Exception as err:  # the user's code: the same input fails the same way again
            raise ModelOutputError(f"{where} raised {type(err).__name__}: {err}") from err
        if not isinstance(out, pd.DataFrame):
            raise ModelOutputError(f"{where} returned {type(out).__name__}, not a DataFrame")
        if len(out) != batch.num_rows:
            raise ModelOutputError(
                f"{where} returned {len(out)} rows for {batch.num_rows} input rows"
            )
        missing = [c for c in self.produced if c not in out.columns]
        extra = [c for c in out.columns if c not in self.produced]
        if missing or extra:
            raise ModelOutputError(
                f"{where} must return exactly the declared output columns {self.produced}; "
                + "; ".join(
                    p
                    for p in (
                        f"missing {missing}" if missing else "",
                        f"undeclared {extra}" if extra else "",
                    )
                    if p
                )
            )
        cols: dict[str, pa.Array] = {}
        for name in self.produced:
            field = self.schema.field(name)
            series = out[name]
            try:
                arr = pa.array(series.to_numpy(), from_pandas=True)
                if not _compatible(arr.type, field.type):
                    raise TypeError(f"{arr.type}")
                cols[name] = arr.cast(field.type, safe=True)
            except (TypeError, pa.ArrowException) as err:
                raise ModelOutputError(
                    f"{where}: column {name!r} is {series.dtype}, declared {field.type} ({err})"
                ) from err
            if not field.nullable and cols[name].null_count:
                raise ModelOutputError(f"{where}: column {name!r} has nulls, declared not null")
        score = cols.pop(SCORE).to_numpy(zero_copy_only=False).astype(np.float64)
        return Scored(score, cols)


def _compatible(actual: pa.DataType, declared: pa.DataType) -> bool:
    """No silent reinterpretation: numbers stay numbers, strings stay strings."""
    if pa.types.is_null(actual):
        return True
    numeric = pa.types.is_integer(actual) or pa.types.is_floating(actual)
    if pa.types.is_floating(declared):
        return numeric
    if pa.types.is_integer(declared):
        return pa.types.is_integer(actual) or pa.types.is_boolean(actual)
    if pa.types.is_string(declared):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_boolean(declared):
        return pa.types.is_boolean(actual)
    return actual == declared or pa.types.is_timestamp(actual) or pa.types.is_date(actual)


def fit_problems(model: ModelHandle, kind: str, produced: list[str]) -> list[str]:
    """Why a resolved model cannot fill a pipeline's declared kind and output columns."""
    if model.kind != kind:
        return [
            f"the pipeline declares a {kind} model but {model.name} version {model.version} is "
            f"{model.kind}"
        ]
    if model.kind != "lightgbm_multiclass":
        return []
    declared = {c[len(PROB_PREFIX) :] for c in produced if c.startswith(PROB_PREFIX)}
    problems = []
    unknown = sorted(declared - set(model.classes))
    if unknown:
        problems.append(
            f"output declares {[prob_column(c) for c in unknown]} but model {model.version} "
            f"has classes {model.classes}"
        )
    return problems
