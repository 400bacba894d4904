"""A partition's drift profile: one DuckDB scan of its exported features (and, per segment, of
its scored shards) into histograms over the model's reference edges, whole and per segment."""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb

from batch_inference_assets.contracts import quote_identifier
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.records import FeatureExport, Histogram, ModelHandle, ScoredShards
from batch_inference_assets.spec import SCORE_COLUMN
from batch_inference_assets.stages import stats

SEGMENT_NULL = "(null)"  # the rows whose segment column is null
SEGMENT_OTHER = "(other)"  # the rows of the segments beyond max_segments, pooled


@dataclass(frozen=True)
class Population:
    """The partition, or one segment of it: its rows, each key's histogram (every feature and
    the score, over the model's reference edges), and per feature its null-or-NaN count and,
    for a categorical one, its count of values outside the model's categories. A categorical's
    last bucket holds both; its nulls alone are `nulls`."""

    rows: int
    histograms: dict[str, Histogram]
    nulls: dict[str, int]
    unseen: dict[str, int]

    def to_doc(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "histograms": {k: h.model_dump() for k, h in self.histograms.items()},
            "nulls": self.nulls,
            "unseen": self.unseen,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Population":
        return cls(
            rows=int(doc.get("rows", 0)),
            histograms={k: Histogram.model_validate(h) for k, h in doc["histograms"].items()},
            nulls={k: int(v) for k, v in doc.get("nulls", {}).items()},
            unseen={k: int(v) for k, v in doc.get("unseen", {}).items()},
        )


@dataclass(frozen=True)
class Profile:
    """What drift compares: the partition's population, and its segments by `<column>=<value>`
    (none without `drift.segment_by`)."""

    model_version: str
    overall: Population
    segments: dict[str, Population]


def segment_label(column: str, value: str) -> str:
    return f"{column}={value}"


def _double(literal: float) -> str:
    # repr round-trips a float exactly and DuckDB parses the string exactly (a bare 0.1 would be
    # a DECIMAL first).
    return f"'{float(literal)!r}'::DOUBLE"


def bucket_sql(value: str, edges: list[float]) -> str:
    """The bucket of `value` (a DOUBLE expression) as `stats.bucket_counts` numbers it: the
    number of edges at or below it; -1 for null or NaN (the missing bucket)."""
    whens = " ".join(f"WHEN {value} < {_double(e)} THEN {i}" for i, e in enumerate(edges))
    return f"CASE WHEN {value} IS NULL OR isnan({value}) THEN -1 {whens} ELSE {len(edges)} END"


def _histogram(counts: dict[int, int] | None, edges: list[float]) -> Histogram:
    out = [0] * (len(edges) + 2)
    for bucket, n in (counts or {}).items():
        out[bucket if bucket >= 0 else len(edges) + 1] += int(n)
    return Histogram(edges=list(edges), counts=out)


@contextmanager
def _connect(object_store: ObjectStore) -> Iterator[duckdb.DuckDBPyConnection]:
    """A bounded in-memory DuckDB that spills to its own temp folder and reads the object store
    through its fsspec filesystem (no extension is downloaded).

    Statistics propagation is off: Parquet writers leave NaN out of a column's min/max, and
    DuckDB 2.0 then folds `isnan(x)` to false and files a NaN under the last bucket."""
    with tempfile.TemporaryDirectory(prefix="bi-drift-") as spill:
        con = duckdb.connect(
            config={
                "memory_limit": "512MB",
                "preserve_insertion_order": False,
                "temp_directory": spill,
                "disabled_optimizers": "statistics_propagation",
            }
        )
        try:
            if not object_store.is_local:
                con.register_filesystem(object_store.base.fs)
            yield con
        finally:
            con.close()


def _lookup(con: duckdb.DuckDBPyConnection, name: str, values: list[str]) -> None:
    """A small table `name(v, code)`: each value with its index. Joined against it, a scan
    stays one hash probe per row whatever the list's length (list_position would read the
    list for each row)."""
    con.execute(
        f"CREATE TEMP TABLE {name} AS SELECT v, MIN(code) AS code FROM (SELECT "
        "unnest(CAST($v AS VARCHAR[])) AS v, generate_subscripts(CAST($v AS VARCHAR[]), 1) - 1 "
        "AS code) GROUP BY v",
        {"v": values},
    )


def _top_values(con: duckdb.DuckDBPyConnection, view: str, column: str, n: int) -> list[str]:
    """The `n` most frequent non-null values of `column` (ties by value, so runs agree)."""
    c = quote_identifier(column)
    rows = con.execute(
        f"SELECT CAST({c} AS VARCHAR) AS v, COUNT(*) AS n FROM {view} WHERE {c} IS NOT NULL "
        f"GROUP BY v ORDER BY n DESC, v LIMIT {int(n)}"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _segment_sql(column: str, i: int) -> str:
    """The row's segment of `column`: its value among the top ones (table top_<i>), else
    (other); (null) for null."""
    c = f"t.{quote_identifier(column)}"
    text = f"CAST({c} AS VARCHAR)"
    return (
        f"CASE WHEN {c} IS NULL THEN '{SEGMENT_NULL}' WHEN {text} IN (SELECT v FROM top_{i}) "
        f"THEN {text} ELSE '{SEGMENT_OTHER}' END AS s_{i}"
    )


def _grouped(
    con: duckdb.DuckDBPyConnection,
    source: str,
    segment_by: list[str],
    columns: list[str],
    aggregates: list[str],
    overall: bool,
) -> dict[str | None, tuple[Any, ...]]:
    """One scan of `source` (a FROM clause whose rows are `t`): `aggregates` over `columns`
    (SELECT expressions) for the whole (key None, when `overall`) and per segment (key
    `<column>=<value>`)."""
    keys = [f"s_{i}" for i in range(len(segment_by))]
    inner = ", ".join([*(_segment_sql(c, i) for i, c in enumerate(segment_by)), *columns])
    sets = ", ".join([*(["()"] if overall else []), *(f"({k})" for k in keys)])
    sql = (
        f"SELECT {', '.join([*keys, *aggregates])} FROM (SELECT {inner} FROM {source}) "
        f"GROUP BY GROUPING SETS ({sets})"
    )
    out: dict[str | None, tuple[Any, ...]] = {}
    for row in con.execute(sql).fetchall():
        labels = [segment_label(c, row[i]) for i, c in enumerate(segment_by) if row[i] is not None]
        out[labels[0] if labels else None] = tuple(row[len(keys) :])
    return out


def scan_partition(
    model: ModelHandle,
    export: FeatureExport,
    scored: ScoredShards,
    segment_by: list[str],
    max_segments: int,
    object_store: ObjectStore,
) -> Profile:
    """Every feature's histogram and null and unseen counts from one scan of the exported
    Parquet, whole and per segment; the score's from the shards' records (whole) and from one
    scan of the scored files (per segment: the segment column is a passthrough, in both).
    Memory is bounded by DuckDB's limit and the segment count, not by the partition's rows.
    A segment column's `max_segments` most frequent values are segments; the rest are pooled
    as `(other)`, nulls as `(null)`."""
    features = model.features
    source, columns, aggregates = "features AS t", [], ["COUNT(*)"]
    for j, f in enumerate(features):
        c = f"t.{quote_identifier(f.name)}"
        if f.type == "string":  # its code (index in the categories), NULL when null or unseen
            source += f" LEFT JOIN cats_{j} ON cats_{j}.v = CAST({c} AS VARCHAR)"
            value, missing = f"CAST(cats_{j}.code AS DOUBLE)", f"{c} IS NULL"
        else:
            value = f"CAST({c} AS DOUBLE)"
            missing = f"{value} IS NULL OR isnan({value})"
        columns += [f"{bucket_sql(value, model.reference[f.name].edges)} AS b_{j}",
                    f"({missing}) AS n_{j}"]  # fmt: skip
        aggregates += [f"histogram(b_{j})", f"count_if(n_{j})"]
    score_edges = model.reference[stats.SCORE_KEY].edges
    with _connect(object_store) as con:
        con.read_parquet([f.path for f in export.files]).create_view("features")
        for j, f in enumerate(features):
            if f.type == "string":
                _lookup(con, f"cats_{j}", list(f.categories))
        for i, column in enumerate(segment_by):
            _lookup(con, f"top_{i}", _top_values(con, "features", column, max_segments))
        by_group = _grouped(con, source, segment_by, columns, aggregates, overall=True)
        scores: dict[str | None, tuple[Any, ...]] = {}
        if segment_by:
            con.read_parquet(scored.paths).create_view("scored")
            score = f"CAST(t.{quote_identifier(SCORE_COLUMN)} AS DOUBLE)"
            bucket = f"{bucket_sql(score, score_edges)} AS b"
            scores = _grouped(con, "scored AS t", segment_by, [bucket], ["histogram(b)"], False)

    def population(values: tuple[Any, ...], score: Histogram) -> Population:
        histograms, nulls, unseen = {}, {}, {}
        for j, f in enumerate(features):
            h = _histogram(values[1 + 2 * j], model.reference[f.name].edges)
            histograms[f.name] = h
            nulls[f.name] = int(values[2 + 2 * j])
            if f.type == "string":
                unseen[f.name] = h.counts[-1] - nulls[f.name]
        return Population(int(values[0]), {**histograms, stats.SCORE_KEY: score}, nulls, unseen)

    whole = by_group.pop(None)  # the grouping set () has its row even over no rows
    overall = population(whole, stats.merge(s.histograms[stats.SCORE_KEY] for s in scored.shards))

    def order(label: str) -> tuple[int, int, int, str]:
        """By column, then its segments largest first, then (other) and (null)."""
        column, value = label.split("=", 1)
        rows = int(by_group[label][0])
        pooled = {SEGMENT_OTHER: 1, SEGMENT_NULL: 2}.get(value, 0)
        return segment_by.index(column), pooled, -rows, value

    segments = {
        label: population(by_group[label], _histogram(scores.get(label, (None,))[0], score_edges))
        for label in sorted((k for k in by_group if k is not None), key=order)
    }
    return Profile(model.version, overall, segments)
