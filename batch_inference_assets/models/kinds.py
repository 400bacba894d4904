"""Model kinds: how a model's raw predictions become the output table's columns.

lightgbm_binary      score = P(class 1); label (int64) = score >= label_threshold
lightgbm_multiclass  prob_<class> (float64) per declared class; label (string) = the argmax
                     class; score = the argmax probability
lightgbm_regression  score = the prediction
python               a registered `predict_fn(pandas.DataFrame) -> pandas.DataFrame` returns
                     every declared model-output column (score included), checked batch by batch
                     with dagster-pandas (models/frames.py)
"""

import hashlib
import importlib
import inspect
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from dagster_pandas import RowCountConstraint, StrictColumnsWithMetadata
from dagster_pandas.constraints import (
    DataFrameConstraintViolationException,
    DataFrameWithMetadataException,
)

from batch_inference_assets.contracts import Column, Contract
from batch_inference_assets.models.frames import FrameColumns, FrameError
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
        self.python_output = (
            PredictFnOutput([output[c] for c in produced]) if model.kind == "python" else None
        )

    def score(self, batch: pa.RecordBatch, x: np.ndarray) -> Scored:
        kind = self.model.kind
        if self.python_output is not None:
            return self._python(batch, self.python_output)
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

    def _python(self, batch: pa.RecordBatch, output: "PredictFnOutput") -> Scored:
        frame = batch.select([f.name for f in self.model.features]).to_pandas()
        where = f"predict_fn {self.predictor.path}"
        try:
            out = self.predictor.predict_frame(frame)
        except Exception as err:  # the user's code: the same input fails the same way again
            raise ModelOutputError(f"{where} raised {type(err).__name__}: {err}") from err
        cols = output.arrays(out, batch.num_rows, where)
        score = cols.pop(SCORE).to_numpy(zero_copy_only=False).astype(np.float64)
        return Scored(score, cols)


class PredictFnOutput:
    """What a predict_fn must return for a batch, checked with dagster-pandas: a DataFrame with
    one row per input row and the declared columns, each of its declared type and non-null if
    declared so. `exact`: those columns and no others (scoring); registration needs the score."""

    def __init__(self, columns: Sequence[Column], exact: bool = True) -> None:
        self.names = [c.name for c in columns]
        self.columns = FrameColumns(columns)
        with warnings.catch_warnings(action="ignore", category=dg.BetaWarning):
            self.exact = StrictColumnsWithMetadata(self.names) if exact else None

    def arrays(self, out: object, rows: int, where: str) -> dict[str, pa.Array]:
        """`out`'s declared columns as Arrow arrays of the declared types, or ModelOutputError
        with `where` (the function's name) and what is wrong."""
        if not isinstance(out, pd.DataFrame):
            raise ModelOutputError(f"{where} returned {type(out).__name__}, not a DataFrame")
        try:
            with warnings.catch_warnings(action="ignore", category=dg.BetaWarning):
                RowCountConstraint(rows).validate(out)
        except DataFrameConstraintViolationException as err:
            raise ModelOutputError(
                f"{where} returned {len(out)} rows for {rows} input rows"
            ) from err
        if not out.columns.is_unique:  # dagster-pandas compares column sets, blind to repeats
            repeated = sorted(set(out.columns[out.columns.duplicated()]))
            raise ModelOutputError(f"{where} returned the columns {repeated} more than once")
        if self.exact is not None:
            try:
                self.exact.validate(out)
            except DataFrameWithMetadataException as err:
                found = err.actual if isinstance(err.actual, dict) else {}
                missing = [c for c in self.names if c in found.get("missing_columns", [])]
                extra = found.get("extra_columns", [])
                said = [f"missing {missing}"] if missing else []
                said += [f"undeclared {extra}"] if extra else []
                raise ModelOutputError(
                    f"{where} must return exactly the declared output columns {self.names}; "
                    + "; ".join(said)
                ) from err
        try:
            return self.columns.arrays(out)
        except FrameError as err:
            raise ModelOutputError(f"{where}: {err}") from err


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
