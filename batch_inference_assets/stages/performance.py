"""Realized performance: a published partition measured against its late labels, in the warehouse.

The labels SQL and the published rows are joined by the id columns and aggregated inside the
warehouse, so only a few rows per segment come back whatever the partition's size. AUC comes
from the scores' order: the rows are grouped by score and a running count of the negatives
below each score gives the pairs each positive wins (ties count half), the rank formula
without one row per row in memory.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from batch_inference_assets.contracts import sql_identifier
from batch_inference_assets.io.warehouse import Warehouse
from batch_inference_assets.spec import (
    LABEL_COLUMN,
    LABEL_THRESHOLDS,
    PARTITION_COLUMN,
    SCORE_COLUMN,
    LabelsSpec,
    MetricKind,
    PipelineSpec,
    metric_kind,
)
from batch_inference_assets.sql import SqlTemplate, partition_values

BINS = 10  # the reliability table's equal-width score bins
EPS = 1e-15  # log loss clips probabilities to [EPS, 1 - EPS]
ALL = "*"  # the segment value of the overall row
LABEL_DATE = "label_date"
MODEL_VERSION = "model_version"
# The metric each kind leads with: the one given per segment and per challenger.
MAIN_METRIC: dict[MetricKind, str] = {
    "binary": "auc",
    "multiclass": "accuracy",
    "regression": "rmse",
}
# (threshold field of LabelsSpec, metric, True when the metric must be at least the bound)
THRESHOLDS = tuple(
    (name, metric, at_least) for name, (metric, _, at_least) in LABEL_THRESHOLDS.items()
)


class LabelsNotLanded(ValueError):
    pass


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    rows: int
    mean_predicted: float | None
    observed_rate: float | None


@dataclass(frozen=True)
class Metrics:
    """One set of rows (overall, a segment, a challenger) against its labels. `values` holds
    the kind's metrics that are defined (AUC needs both classes among the labelled rows)."""

    published_rows: int
    labelled_rows: int
    values: dict[str, float] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        return self.labelled_rows / self.published_rows if self.published_rows else 0.0


@dataclass(frozen=True)
class RealizedPerformance:
    kind: MetricKind
    overall: Metrics
    reliability: list[ReliabilityBin]  # binary only
    segments: dict[str, dict[str, Metrics]]  # segment column -> value -> metrics
    challengers: dict[str, Metrics]  # model_version -> metrics, from <table>_shadow


@dataclass(frozen=True)
class Source:
    """Published rows to measure: a table, optionally only one model_version's rows."""

    table: str  # qualified and quoted, as Warehouse.published_table gives it
    model_version: str | None = None


# --- pure metric functions over the warehouse's aggregates --------------------------------------


def auc_from_pairs(won_pairs: float, positives: float, negatives: float) -> float | None:
    """AUC = the share of (positive, negative) pairs the positive wins (a tie: half)."""
    if positives <= 0 or negatives <= 0:
        return None
    return won_pairs / (positives * negatives)


def reliability_bins(rows: Sequence[tuple[int, int, float, float]]) -> list[ReliabilityBin]:
    """The BINS bins from (bin, rows, score sum, positives) aggregates; empty bins kept."""
    found = {int(b): (int(n), float(s), float(p)) for b, n, s, p in rows}
    out = []
    for b in range(BINS):
        n, score_sum, positives = found.get(b, (0, 0.0, 0.0))
        out.append(
            ReliabilityBin(
                lower=b / BINS,
                upper=(b + 1) / BINS,
                rows=n,
                mean_predicted=score_sum / n if n else None,
                observed_rate=positives / n if n else None,
            )
        )
    return out


def calibration_error(bins: Sequence[ReliabilityBin]) -> float | None:
    """Expected calibration error: the bins' |mean predicted - observed rate|, weighted by rows."""
    total = sum(b.rows for b in bins)
    if not total:
        return None
    return sum(
        b.rows / total * abs(b.mean_predicted - b.observed_rate)
        for b in bins
        if b.rows and b.mean_predicted is not None and b.observed_rate is not None
    )


def classification_metrics(confusion: Mapping[tuple[str, str], int]) -> dict[str, float]:
    """Accuracy and macro-F1 from (predicted, actual) -> rows, over every class seen in either."""
    total = sum(confusion.values())
    if not total:
        return {}
    classes = sorted({c for pair in confusion for c in pair})
    correct = sum(n for (p, a), n in confusion.items() if p == a)
    f1 = []
    for c in classes:
        tp = confusion.get((c, c), 0)
        fp = sum(n for (p, a), n in confusion.items() if p == c and a != c)
        fn = sum(n for (p, a), n in confusion.items() if a == c and p != c)
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": correct / total, "macro_f1": sum(f1) / len(f1)}


def _defined(values: Mapping[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and not math.isnan(v)}


# --- thresholds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    metric: str
    value: float | None  # None: not computed for this kind, or undefined on these labels
    bound: float
    at_least: bool

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    def describe(self) -> str:
        op = ">=" if self.at_least else "<="
        shown = "n/a" if self.value is None else f"{self.value:.4f}"
        return f"{self.metric} {shown} (want {op} {self.bound}){'' if self.passed else ': FAIL'}"


def compare_with_thresholds(labels: LabelsSpec, metrics: Metrics) -> list[Comparison]:
    """The spec's thresholds that are set, each against the overall metric it bounds."""
    out = []
    for name, metric, at_least in THRESHOLDS:
        bound = getattr(labels, name)
        if bound is not None:
            out.append(Comparison(metric, metrics.values.get(metric), float(bound), at_least))
    return out


# --- SQL --------------------------------------------------------------------------------------


def _labels_template(spec: PipelineSpec) -> tuple[LabelsSpec, SqlTemplate]:
    if spec.labels is None:
        raise ValueError(f"pipeline {spec.name!r} has no labels section")
    return spec.labels, SqlTemplate.parse(spec.labels.sql)


def render_labels(
    spec: PipelineSpec, warehouse: Warehouse, day: date, window: tuple[datetime, datetime]
) -> tuple[str, list[Any]]:
    """The labels SQL for the partition, with `?` placeholders and the values to bind."""
    _, template = _labels_template(spec)
    return template.render(
        schema=warehouse.feature_schema, values=partition_values(day, window, {})
    )


def count_labels(
    spec: PipelineSpec, warehouse: Warehouse, day: date, window: tuple[datetime, datetime]
) -> int:
    """How many of the day's labels have landed (rows of the labels SQL with a label)."""
    sql, params = render_labels(spec, warehouse, day, window)
    label = sql_identifier(LABEL_COLUMN, warehouse.dialect)
    # On lines of its own, so a comment ending the labels SQL cannot swallow the `)`.
    wrapped = f"SELECT COUNT(*) FROM (\n{sql}\n) AS labels WHERE labels.{label} IS NOT NULL"
    return int(warehouse.query(wrapped, params).column(0)[0].as_py() or 0)


def check_landed(
    spec: PipelineSpec, warehouse: Warehouse, day: date, window: tuple[datetime, datetime]
) -> int:
    labels, _ = _labels_template(spec)
    landed = count_labels(spec, warehouse, day, window)
    if landed < labels.min_rows:
        raise LabelsNotLanded(
            f"labels for {day} have not landed: {landed} rows, min_rows {labels.min_rows}"
        )
    return landed


def duplicate_label_ids(
    spec: PipelineSpec, warehouse: Warehouse, day: date, window: tuple[datetime, datetime]
) -> int:
    """Ids with more than one label for the day: each would count its row more than once."""
    sql, params = render_labels(spec, warehouse, day, window)
    ids = ", ".join(sql_identifier(c, warehouse.dialect) for c in spec.features.id_columns)
    label = sql_identifier(LABEL_COLUMN, warehouse.dialect)
    wrapped = (
        f"SELECT COUNT(*) FROM (SELECT {ids} FROM (\n{sql}\n) AS labels "
        f"WHERE labels.{label} IS NOT NULL GROUP BY {ids} HAVING COUNT(*) > 1) AS dupes"
    )
    return int(warehouse.query(wrapped, params).column(0)[0].as_py() or 0)


def published_days(spec: PipelineSpec, warehouse: Warehouse, first: date, last: date) -> set[date]:
    """The days in [first, last] with rows in the published table."""
    table = warehouse.published_table(spec.output.table)
    if table is None:
        return set()
    part = sql_identifier(PARTITION_COLUMN, warehouse.dialect)
    found = warehouse.query(
        f"SELECT DISTINCT {part} FROM {table} WHERE {part} BETWEEN ? AND ?", [first, last]
    )
    return {_as_date(v) for v in found.column(0).to_pylist()}


def _as_date(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


def _joined_sql(
    spec: PipelineSpec,
    dialect: str,
    labels_sql: str,
    source: Source,
    segment: str | None,
) -> str:
    """CTEs `joined` (every published row of the partition with its label, or NULL) and
    `labelled` (those with a label). Binds: the labels SQL's values, the day (label_date), the
    day (published rows), and the model version when `source` has one."""

    def q(name: str) -> str:
        return sql_identifier(name, dialect)

    kind = metric_kind(spec.model.kind)
    ids = spec.features.id_columns
    actual = f"CAST(l.{q(LABEL_COLUMN)} AS {'VARCHAR' if kind == 'multiclass' else 'DOUBLE'})"
    predicted = f"p.{q(LABEL_COLUMN)}" if kind == "multiclass" else "NULL"
    seg = f"p.{q(segment)}" if segment else f"'{ALL}'"
    version = f" AND p.{q(MODEL_VERSION)} = ?" if source.model_version is not None else ""
    on = " AND ".join(f"l.{q(c)} = p.{q(c)}" for c in ids)
    return (
        f"WITH landed_labels AS (\n{labels_sql}\n),\n"
        f"joined AS (SELECT {seg} AS segment, p.{q(SCORE_COLUMN)} AS score, "
        f"{predicted} AS predicted, {actual} AS actual "
        f"FROM {source.table} AS p LEFT JOIN landed_labels AS l ON {on} "
        f"AND CAST(l.{q(LABEL_DATE)} AS DATE) = ? AND l.{q(LABEL_COLUMN)} IS NOT NULL "
        f"WHERE p.{q(PARTITION_COLUMN)} = ?{version}),\n"
        "labelled AS (SELECT * FROM joined WHERE actual IS NOT NULL)\n"
    )


_TOTALS = {
    "binary": (
        "SUM(actual) AS positives, "
        "SUM(CASE WHEN actual IS NULL OR actual IN (0, 1) THEN 0 ELSE 1 END) AS invalid, "
        f"-SUM(actual * LN(GREATEST(LEAST(score, 1 - {EPS}), {EPS})) "
        f"+ (1 - actual) * LN(GREATEST(LEAST(1 - score, 1 - {EPS}), {EPS}))) AS log_loss_sum"
    ),
    "regression": (
        "SUM((score - actual) * (score - actual)) AS squared_sum, "
        "SUM(ABS(score - actual)) AS absolute_sum"
    ),
    "multiclass": "0 AS unused",
}


def measure(
    spec: PipelineSpec,
    warehouse: Warehouse,
    day: date,
    window: tuple[datetime, datetime],
    source: Source,
    segment: str | None = None,
) -> dict[str, Metrics]:
    """Metrics of `source`'s rows of the day, per value of `segment` (a published column; its
    values as text, 'null' for NULL), or overall under ALL."""
    kind = metric_kind(spec.model.kind)
    if kind == "multiclass" and LABEL_COLUMN not in spec.output_contract.names:
        raise ValueError(
            f"realized performance of a multiclass model needs the {LABEL_COLUMN!r} column "
            "(the predicted class) in output.columns"
        )
    labels_sql, labels_params = render_labels(spec, warehouse, day, window)
    ctes = _joined_sql(spec, warehouse.dialect, labels_sql, source, segment)
    version = [source.model_version] if source.model_version is not None else []
    params = [*labels_params, day, day, *version]
    totals = warehouse.query(
        f"{ctes}SELECT segment, COUNT(*) AS published_rows, COUNT(actual) AS labelled_rows, "
        f"{_TOTALS[kind]} FROM joined GROUP BY segment",
        params,
    ).to_pylist()
    won = _won_pairs(warehouse, ctes, params) if kind == "binary" else {}
    confusion = _confusion(warehouse, ctes, params) if kind == "multiclass" else {}
    out = {}
    for row in totals:
        name, labelled = _segment_name(row["segment"]), int(row["labelled_rows"])
        values: dict[str, float | None] = {}
        if kind == "binary":
            if row["invalid"]:
                raise ValueError(
                    f"labels for {day}: {row['invalid']} labels are neither 0 nor 1 "
                    f"({spec.model.kind} model)"
                )
            positives = float(row["positives"] or 0)
            values["auc"] = auc_from_pairs(won.get(name, 0.0), positives, labelled - positives)
            values["log_loss"] = float(row["log_loss_sum"]) / labelled if labelled else None
        elif kind == "regression" and labelled:
            values["rmse"] = math.sqrt(float(row["squared_sum"]) / labelled)
            values["mae"] = float(row["absolute_sum"]) / labelled
        elif kind == "multiclass":
            values.update(classification_metrics(confusion.get(name, {})))
        out[name] = Metrics(int(row["published_rows"]), labelled, _defined(values))
    return out


def _segment_name(value: Any) -> str:
    return "null" if value is None else str(value)


def _won_pairs(warehouse: Warehouse, ctes: str, params: list[Any]) -> dict[str, float]:
    rows = warehouse.query(
        f"{ctes}, by_score AS (SELECT segment, score, COUNT(*) AS n, SUM(actual) AS pos "
        "FROM labelled GROUP BY segment, score), "
        "ranked AS (SELECT segment, pos, n - pos AS neg, "
        "SUM(n - pos) OVER (PARTITION BY segment ORDER BY score "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) - (n - pos) AS neg_below "
        "FROM by_score) "
        "SELECT segment, SUM(pos * (neg_below + 0.5 * neg)) AS won FROM ranked GROUP BY segment",
        params,
    ).to_pylist()
    return {_segment_name(r["segment"]): float(r["won"] or 0) for r in rows}


def _confusion(
    warehouse: Warehouse, ctes: str, params: list[Any]
) -> dict[str, dict[tuple[str, str], int]]:
    rows = warehouse.query(
        f"{ctes}SELECT segment, CAST(predicted AS VARCHAR) AS predicted, actual, COUNT(*) AS n "
        "FROM labelled GROUP BY segment, CAST(predicted AS VARCHAR), actual",
        params,
    ).to_pylist()
    out: dict[str, dict[tuple[str, str], int]] = {}
    for r in rows:
        out.setdefault(_segment_name(r["segment"]), {})[(str(r["predicted"]), str(r["actual"]))] = (
            int(r["n"])
        )
    return out


def reliability(
    spec: PipelineSpec,
    warehouse: Warehouse,
    day: date,
    window: tuple[datetime, datetime],
    source: Source,
) -> list[ReliabilityBin]:
    """The overall reliability table of a binary model's labelled rows."""
    labels_sql, labels_params = render_labels(spec, warehouse, day, window)
    ctes = _joined_sql(spec, warehouse.dialect, labels_sql, source, None)
    version = [source.model_version] if source.model_version is not None else []
    bin_of = f"LEAST(GREATEST(CAST(FLOOR(score * {BINS}) AS INTEGER), 0), {BINS - 1})"
    rows = warehouse.query(
        f"{ctes}SELECT {bin_of} AS bin, COUNT(*) AS n, SUM(score) AS score_sum, "
        f"SUM(actual) AS positives FROM labelled GROUP BY {bin_of}",
        [*labels_params, day, day, *version],
    ).to_pylist()
    return reliability_bins([(r["bin"], r["n"], r["score_sum"], r["positives"]) for r in rows])


def realized_performance(
    spec: PipelineSpec, warehouse: Warehouse, day: date, window: tuple[datetime, datetime]
) -> RealizedPerformance:
    """The day's published rows against its labels: overall, per `drift.segment_by` column,
    and per challenger model version when `<table>_shadow` exists."""
    table = warehouse.published_table(spec.output.table)
    if table is None:
        raise ValueError(f"the output table {spec.output.table} does not exist")
    kind = metric_kind(spec.model.kind)
    if dupes := duplicate_label_ids(spec, warehouse, day, window):
        raise ValueError(f"labels for {day}: {dupes} ids have more than one label")
    main = Source(table)
    overall = measure(spec, warehouse, day, window, main).get(ALL, Metrics(0, 0))
    if not overall.published_rows:
        raise ValueError(f"nothing is published in {spec.output.table} for {day}")
    if not overall.labelled_rows:
        raise ValueError(
            f"none of the {overall.published_rows} published rows of {day} has a label "
            f"(joined by {', '.join(spec.features.id_columns)})"
        )
    bins: list[ReliabilityBin] = []
    if kind == "binary":
        bins = reliability(spec, warehouse, day, window, main)
        if (ece := calibration_error(bins)) is not None:
            overall = replace(overall, values={**overall.values, "calibration_error": ece})
    segments = {
        col: _largest(measure(spec, warehouse, day, window, main, col), spec.drift.max_segments)
        for col in spec.drift.segment_by
    }
    return RealizedPerformance(
        kind, overall, bins, segments, challengers(spec, warehouse, day, window)
    )


def _largest(by_value: dict[str, Metrics], limit: int) -> dict[str, Metrics]:
    """The `limit` segments with the most labelled rows (ties by name)."""
    ranked = sorted(by_value.items(), key=lambda kv: (-kv[1].labelled_rows, kv[0]))
    return dict(ranked[:limit])


def challengers(
    spec: PipelineSpec, warehouse: Warehouse, day: date, window: tuple[datetime, datetime]
) -> dict[str, Metrics]:
    """Overall metrics per model_version of `<table>_shadow`; none while it does not exist."""
    shadow = warehouse.published_table(f"{spec.output.table}_shadow")
    if shadow is None:
        return {}
    q = sql_identifier
    versions = warehouse.query(
        f"SELECT DISTINCT {q(MODEL_VERSION, warehouse.dialect)} FROM {shadow} "
        f"WHERE {q(PARTITION_COLUMN, warehouse.dialect)} = ?",
        [day],
    ).column(0)
    out = {}
    for version in sorted(str(v) for v in versions.to_pylist() if v is not None):
        found = measure(spec, warehouse, day, window, Source(shadow, version))
        if ALL in found:
            out[version] = found[ALL]
    return out


def reliability_markdown(bins: Sequence[ReliabilityBin]) -> str:
    lines = ["| score bin | mean predicted | observed rate | rows |", "|---|---:|---:|---:|"]
    for b in bins:
        mean = "" if b.mean_predicted is None else f"{b.mean_predicted:.3f}"
        rate = "" if b.observed_rate is None else f"{b.observed_rate:.3f}"
        lines.append(f"| {b.lower:.1f}-{b.upper:.1f} | {mean} | {rate} | {b.rows:,} |")
    return "\n".join(lines)


def metadata_values(result: RealizedPerformance) -> dict[str, float | int]:
    """The numbers the UI plots over partitions: overall metrics, labelled rows and coverage,
    then the main metric per segment (`auc/region=east`) and per challenger
    (`auc/model_version=<version>`)."""
    main = MAIN_METRIC[result.kind]
    out: dict[str, float | int] = {
        **result.overall.values,
        "labelled_rows": result.overall.labelled_rows,
        "published_rows": result.overall.published_rows,
        "coverage": result.overall.coverage,
    }
    for col, by_value in result.segments.items():
        for value, m in by_value.items():
            if main in m.values:
                out[f"{main}/{col}={value}"] = m.values[main]
    for version, m in result.challengers.items():
        if main in m.values:
            out[f"{main}/{MODEL_VERSION}={version}"] = m.values[main]
    return out
