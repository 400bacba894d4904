"""Reason codes: each explained row's largest feature contributions (LightGBM's own TreeSHAP),
which rows to explain (all, a shard's highest scores, a sample by id), and their Arrow columns."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_assets.models.compiled import CompiledPredictor
from batch_inference_assets.models.lightgbm_model import LightGBMPredictor
from batch_inference_assets.spec import ExplainSpec

REST_COLUMN = "reason_rest_contribution"
# splitmix64's constants: a fixed, platform-independent mix (Python's hash() is salted per process).
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_BYTE_BASE = np.uint64(0x100000001B3)  # FNV-64's prime, as the polynomial base for string bytes


def column_names(top_k: int) -> list[str]:
    """reason_1, reason_1_contribution, ..., reason_rest_contribution (spec.reason_columns)."""
    names = []
    for i in range(1, top_k + 1):
        names += [f"reason_{i}", f"reason_{i}_contribution"]
    return [*names, REST_COLUMN]


def booster_of(predictor: Any) -> tuple[lgb.Booster, int]:
    """The LightGBM booster that explains `predictor`'s scores, and its thread count: its own,
    or for the compiled predictor the LightGBM reference loaded from the same model text, which
    the compiled object was verified against (and which scores instead if it differed)."""
    base = predictor.reference if isinstance(predictor, CompiledPredictor) else predictor
    if not isinstance(base, LightGBMPredictor):
        raise ValueError(f"reason codes need a LightGBM model, not {type(predictor).__name__}")
    return base.booster, base.threads


def contributions(booster: lgb.Booster, x: np.ndarray, threads: int = 0) -> np.ndarray:
    """(rows, features + 1): each feature's contribution to the raw margin, the bias last; a
    row's values sum to its raw margin (log-odds for a binary model)."""
    n_features = x.shape[1]
    if len(x) == 0:
        return np.empty((0, n_features + 1), dtype=np.float64)
    out = np.asarray(booster.predict(x, pred_contrib=True, num_threads=threads), dtype=np.float64)
    if out.shape != (len(x), n_features + 1):  # a multiclass model: one block per class
        raise ValueError(
            f"reason codes need one output per row; the model gave {out.shape[1]} contribution "
            f"columns for {n_features} features"
        )
    return out


@dataclass(frozen=True)
class Reasons:
    """The top features of explained rows, largest |contribution| first (ties: feature order)."""

    features: np.ndarray  # (rows, top_k) feature index; -1 beyond the model's feature count
    contributions: np.ndarray  # (rows, top_k) signed; NaN where features is -1
    rest: np.ndarray  # (rows,) the raw margin minus the top_k contributions

    def take(self, rows: np.ndarray | slice) -> "Reasons":
        return Reasons(self.features[rows], self.contributions[rows], self.rest[rows])


def top_reasons(contrib: np.ndarray, top_k: int) -> Reasons:
    """The `top_k` features of each row of `contrib` (as `contributions` returns it) by absolute
    contribution, ties broken by feature order, and the rest: margin - their sum."""
    rows, n_features = contrib.shape[0], contrib.shape[1] - 1
    k = min(top_k, n_features)
    feats = contrib[:, :n_features]
    size = np.nan_to_num(np.abs(feats), nan=-1.0)
    if k == n_features:
        idx = np.argsort(-size, axis=1, kind="stable")
    else:
        # The k-th largest per row, then everything above it and the first ties in feature
        # order: exactly k per row, in O(rows x features).
        kth = np.partition(size, n_features - k, axis=1)[:, n_features - k, None]
        above = size > kth
        tied = size == kth
        need = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
        idx = np.nonzero(chosen)[1].reshape(rows, k)  # ascending feature order per row
        order = np.argsort(-np.take_along_axis(size, idx, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)
    values = np.take_along_axis(feats, idx, axis=1)
    rest = contrib.sum(axis=1) - values.sum(axis=1)
    if k < top_k:  # fewer features than reasons asked for: the extra reasons stay null
        idx = np.hstack([idx, np.full((rows, top_k - k), -1, dtype=idx.dtype)])
        values = np.hstack([values, np.full((rows, top_k - k), np.nan)])
    return Reasons(idx, values, rest)


def arrow_columns(
    reasons: Reasons, rows: np.ndarray, n: int, feature_names: Sequence[str]
) -> dict[str, pa.Array]:
    """The reason columns of `n` rows: `reasons` at the positions `rows`, null elsewhere."""
    explained = np.zeros(n, dtype=bool)
    explained[rows] = True
    names = pa.array(list(feature_names), type=pa.string())
    out: dict[str, pa.Array] = {}
    for i in range(reasons.features.shape[1]):
        valid = np.zeros(n, dtype=bool)
        valid[rows] = reasons.features[:, i] >= 0
        codes = np.zeros(n, dtype=np.int32)
        codes[rows] = np.maximum(reasons.features[:, i], 0)
        values = np.zeros(n, dtype=np.float64)
        values[rows] = reasons.contributions[:, i]
        out[f"reason_{i + 1}"] = pa.DictionaryArray.from_arrays(
            pa.array(codes, mask=~valid), names
        ).cast(pa.string())
        out[f"reason_{i + 1}_contribution"] = pa.array(values, mask=~valid)
    rest = np.zeros(n, dtype=np.float64)
    rest[rows] = reasons.rest
    out[REST_COLUMN] = pa.array(rest, mask=~explained)
    return out


def reason_columns(
    booster: lgb.Booster,
    x: np.ndarray,
    feature_names: Sequence[str],
    top_k: int,
    rows: np.ndarray | None = None,
    threads: int = 0,
) -> dict[str, pa.Array]:
    """The reason columns for the rows of `x`: explained at the positions `rows` (all when
    None), null elsewhere. Contributions are computed for those rows only."""
    if rows is None:
        rows = np.arange(len(x))
        contrib = contributions(booster, x, threads)
    else:
        rows = np.asarray(rows, dtype=np.int64)
        contrib = contributions(booster, x[rows], threads)
    return arrow_columns(top_reasons(contrib, top_k), rows, len(x), feature_names)


# --- which rows: a sample by id, a shard's highest scores ---------------------------------------


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (uint64 arithmetic wraps, as intended)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _MUL1
    h = h ^ (h >> np.uint64(27))
    h = h * _MUL2
    return h ^ (h >> np.uint64(31))


def _string_hash(column: pa.Array) -> np.ndarray:
    """A polynomial hash of each value's UTF-8 bytes, vectorized over the Arrow buffers."""
    column = column.cast(pa.large_string())
    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[
        column.offset : column.offset + n + 1
    ]
    data = column.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    raw = raw[offsets[0] : offsets[-1]].astype(np.uint64)
    lengths = np.diff(offsets)
    within = np.arange(len(raw)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    powers = np.cumprod(np.full(int(lengths.max(initial=0)) + 1, _BYTE_BASE, dtype=np.uint64))
    sums = np.concatenate([[np.uint64(0)], np.cumsum((raw + np.uint64(1)) * powers[within])])
    starts = offsets[:-1] - offsets[0]
    per_value = sums[starts + lengths] - sums[starts]  # wraps mod 2**64, like the products
    return _mix(per_value ^ _mix(lengths.astype(np.uint64)))


def id_hash(ids: Sequence[pa.Array | pa.ChunkedArray]) -> np.ndarray:
    """A uint64 per row from the values of the id columns: the same ids give the same hash in
    every run, process and machine. Integers hash their value (whatever their width); other
    types their text."""
    h = np.zeros(len(ids[0]) if ids else 0, dtype=np.uint64)
    for column in ids:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if pa.types.is_integer(column.type):
            values = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
            part = _mix(values.astype(np.int64).view(np.uint64) + _GAMMA)
        else:
            part = _string_hash(pc.fill_null(column.cast(pa.string()), ""))
        h = _mix(h * _MUL1 + part + _GAMMA)
    return h


def sample_rows(ids: Sequence[pa.Array | pa.ChunkedArray], rate: float) -> np.ndarray:
    """The positions of the rows in a deterministic sample of about `rate` of all ids: a row is
    in it when its id hash, read as a number in [0, 1), is below `rate`."""
    unit = (id_hash(ids) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.flatnonzero(unit < rate)


def highest(scores: np.ndarray, count: int) -> np.ndarray:
    """The positions of the `count` highest scores, ascending; ties go to the earlier row and
    NaN ranks last."""
    n = len(scores)
    if n <= count:
        return np.arange(n)
    s = np.where(np.isnan(scores), -np.inf, scores)
    kth = np.partition(s, n - count)[n - count]
    above = np.flatnonzero(s > kth)
    ties = np.flatnonzero(s == kth)[: count - len(above)]
    return np.sort(np.concatenate([above, ties]))


class TopRows:
    """The `count` highest-scoring rows seen so far across batches, with their feature rows:
    at most 2 x count rows are held (count x (features + 2) x 8 bytes after each batch),
    whatever the shard's size."""

    def __init__(self, count: int, n_features: int) -> None:
        self.count = count
        self.seen = 0
        self.positions = np.empty(0, dtype=np.int64)
        self.scores = np.empty(0, dtype=np.float64)
        self.x = np.empty((0, n_features), dtype=np.float64)

    def add(self, scores: np.ndarray, x: np.ndarray) -> None:
        pick = highest(scores, self.count)  # the batch's own top first: O(batch), no big copy
        positions = np.concatenate([self.positions, self.seen + pick])
        merged = np.concatenate([self.scores, scores[pick]])
        keep = highest(merged, self.count)  # held rows precede the batch's: ties stay earliest
        self.positions, self.scores = positions[keep], merged[keep]
        self.x = np.concatenate([self.x, x[pick]])[keep]
        self.seen += len(scores)


class ShardReasons:
    """One shard's reason columns. rows: all and sample explain each batch as it is scored;
    rows: top_k can only know the shard's highest scores once every row is scored, so its
    batches get nulls, `TopRows` keeps the leaders' feature rows, and `columns_at` then gives
    the reasons for each slice of the written rows (the scoring stage rewrites its file)."""

    def __init__(
        self,
        explain: ExplainSpec,
        predictor: Any,
        feature_names: Sequence[str],
        id_columns: Sequence[str],
    ) -> None:
        self.explain = explain
        self.booster, self.threads = booster_of(predictor)
        self.feature_names = list(feature_names)
        self.id_columns = list(id_columns)
        self.top = TopRows(explain.row_count, len(self.feature_names))
        self._leaders: tuple[np.ndarray, Reasons] | None = None
        self.rows_explained = 0

    @property
    def deferred(self) -> bool:
        """Whether the reasons come after every batch (rows: top_k)."""
        return self.explain.rows == "top_k"

    def batch(
        self, batch: pa.RecordBatch, x: np.ndarray, scores: np.ndarray
    ) -> dict[str, pa.Array] | None:
        """The batch's reason columns, or None (all null) while they are deferred."""
        rows: np.ndarray | None = None
        if self.explain.rows == "top_k":
            self.top.add(scores, x)
            return None
        if self.explain.rows == "sample":
            ids = [batch.column(c) for c in self.id_columns]
            rows = sample_rows(ids, self.explain.sample_rate)
        self.rows_explained += len(x) if rows is None else len(rows)
        return reason_columns(
            self.booster, x, self.feature_names, self.explain.top_k, rows, self.threads
        )

    def columns_at(self, start: int, n: int) -> dict[str, pa.Array]:
        """rows: top_k, after the last batch: the reason columns of the written rows
        [start, start + n), explained where they are among the shard's highest scores."""
        if self._leaders is None:
            contrib = contributions(self.booster, self.top.x, self.threads)
            self._leaders = (self.top.positions, top_reasons(contrib, self.explain.top_k))
            self.rows_explained = len(self.top.positions)
        positions, reasons = self._leaders
        lo, hi = np.searchsorted(positions, [start, start + n])
        rows = positions[lo:hi] - start
        return arrow_columns(reasons.take(slice(lo, hi)), rows, n, self.feature_names)
