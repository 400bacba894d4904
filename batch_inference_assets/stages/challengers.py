"""Champion vs challengers on the same rows: how far apart their scores are, per partition.

Everything row-level is computed by the warehouse over the two published tables (the
champion's `<table>` and the challengers' `<table>_shadow`, joined on the ids), so it holds
whatever the partition's size and reads only what was published. The score distributions
come from the shard steps' histograms over the champion's reference score edges.
"""

from dataclasses import dataclass
from datetime import date
from typing import Any

from batch_inference_assets.contracts import sql_identifier
from batch_inference_assets.io.warehouse import Warehouse
from batch_inference_assets.records import ScoredShards
from batch_inference_assets.spec import LABEL_COLUMN, PARTITION_COLUMN, SCORE_COLUMN, PipelineSpec
from batch_inference_assets.stages import stats
from batch_inference_assets.stages.publish import shadow_table

DEFAULT_TOP_K = 1_000  # without exports.top_k, the overlap of the 1,000 highest scores


@dataclass(frozen=True)
class SegmentComparison:
    column: str
    value: str
    rows: int
    spearman: float | None
    label_flip_rate: float | None


@dataclass(frozen=True)
class Comparison:
    """One challenger against the champion on one partition."""

    ref: str
    version: str
    champion_rows: int
    challenger_rows: int
    matched_rows: int
    psi: float
    spearman: float | None
    top_k: int
    top_k_overlap: float | None
    label_flip_rate: float | None
    segments: list[SegmentComparison]

    @property
    def same_rows(self) -> bool:
        """Every id the champion scored has the challenger's score, and nothing else does."""
        return self.champion_rows == self.challenger_rows == self.matched_rows > 0


def top_k(spec: PipelineSpec) -> int:
    return spec.exports.top_k.k if spec.exports.top_k else DEFAULT_TOP_K


def _q(name: str, dialect: str) -> str:
    return sql_identifier(name, dialect)


def _joined(spec: PipelineSpec, table: str, shadow: str, dialect: str, extra: list[str]) -> str:
    """Champion and challenger rows of a day joined on the ids: a (score), b (score), la/lb
    (labels, classifiers), the `extra` champion columns. Binds day, day, version."""
    ids = [_q(c, dialect) for c in spec.features.id_columns]
    part, score = _q(PARTITION_COLUMN, dialect), _q(SCORE_COLUMN, dialect)
    label = _q(LABEL_COLUMN, dialect)
    labelled = spec.model.kind == "lightgbm_binary" or spec.model.kind == "lightgbm_multiclass"
    c_cols = [*ids, f"{score} AS a", *([f"{label} AS la"] if labelled else [])]
    c_cols += [_q(e, dialect) for e in extra]
    s_cols = [*(f"{i} AS s_{n}" for i, n in zip(ids, spec.features.id_columns, strict=True))]
    s_cols += [f"{score} AS b", *([f"{label} AS lb"] if labelled else [])]
    on = " AND ".join(
        f"c.{i} = s.s_{n}" for i, n in zip(ids, spec.features.id_columns, strict=True)
    )
    return (
        f"c AS (SELECT {', '.join(c_cols)} FROM {table} WHERE {part} = ?), "
        f"s AS (SELECT {', '.join(s_cols)} FROM {shadow} WHERE {part} = ? "
        f"AND {_q('model_version', dialect)} = ?), "
        f"j AS (SELECT c.*, s.b{', s.lb' if labelled else ''} FROM c JOIN s ON {on})"
    )


def _avg_rank(column: str, group: str) -> str:
    """Spearman's average rank of tied values (RANK gives the lowest of the tie)."""
    over = f"PARTITION BY {group} " if group else ""
    return (
        f"RANK() OVER ({over}ORDER BY {column}) "
        f"+ (COUNT(*) OVER (PARTITION BY {group + ', ' if group else ''}{column}) - 1) / 2.0"
    )


def overall_sql(spec: PipelineSpec, table: str, shadow: str, dialect: str) -> str:
    ids = ", ".join(_q(c, dialect) for c in spec.features.id_columns)
    labelled = spec.model.kind in ("lightgbm_binary", "lightgbm_multiclass")
    flips = "SUM(CASE WHEN la <> lb THEN 1 ELSE 0 END)" if labelled else "NULL"
    k = int(top_k(spec))
    return (
        f"WITH {_joined(spec, table, shadow, dialect, [])}, "
        f"r AS (SELECT a, b{', la, lb' if labelled else ''}, "
        f"{_avg_rank('a', '')} AS ra, {_avg_rank('b', '')} AS rb, "
        f"ROW_NUMBER() OVER (ORDER BY a DESC, {ids}) AS ka, "
        f"ROW_NUMBER() OVER (ORDER BY b DESC, {ids}) AS kb FROM j) "
        f"SELECT COUNT(*) AS n, CORR(ra, rb) AS spearman, "
        f"SUM(CASE WHEN ka <= {k} AND kb <= {k} THEN 1 ELSE 0 END) AS both_top, "
        f"{flips} AS flips FROM r"
    )


def segment_sql(spec: PipelineSpec, table: str, shadow: str, dialect: str, column: str) -> str:
    seg = _q(column, dialect)
    labelled = spec.model.kind in ("lightgbm_binary", "lightgbm_multiclass")
    flips = "SUM(CASE WHEN la <> lb THEN 1 ELSE 0 END)" if labelled else "NULL"
    return (
        f"WITH {_joined(spec, table, shadow, dialect, [column])}, "
        f"r AS (SELECT {seg} AS seg, a, b{', la, lb' if labelled else ''}, "
        f"{_avg_rank('a', seg)} AS ra, {_avg_rank('b', seg)} AS rb FROM j) "
        f"SELECT CAST(seg AS VARCHAR) AS seg, COUNT(*) AS n, CORR(ra, rb) AS spearman, "
        f"{flips} AS flips FROM r GROUP BY seg ORDER BY n DESC, seg"
    )


def _count(warehouse: Warehouse, table: str, day: date, version: str | None = None) -> int:
    d = warehouse.dialect
    sql = f"SELECT COUNT(*) AS n FROM {table} WHERE {_q(PARTITION_COLUMN, d)} = ?"
    params: list[Any] = [day]
    if version is not None:
        sql += f" AND {_q('model_version', d)} = ?"
        params.append(version)
    return int(warehouse.query(sql, params).column(0)[0].as_py())


def _first_row(table: Any) -> dict[str, Any]:
    row = table.slice(0, 1).to_pylist()[0]
    return {k.lower(): v for k, v in row.items()}


def _rate(part: Any, whole: int) -> float | None:
    return None if part is None or whole == 0 else float(part) / whole


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def compare(
    spec: PipelineSpec, warehouse: Warehouse, scored: ScoredShards, day: date
) -> list[Comparison]:
    """Each challenger the run scored against the champion, on the published rows of `day`."""
    table = warehouse.published_table(spec.output.table)
    shadow = warehouse.published_table(shadow_table(spec))
    if table is None or shadow is None:
        raise ValueError(f"{spec.output.table} or its shadow table is not published yet")
    d = warehouse.dialect
    champion_hist = stats.merge(s.histograms[stats.SCORE_KEY] for s in scored.shards)
    champion_rows = _count(warehouse, table, day)
    out = []
    for version, ref in scored.challenger_versions.items():
        params = [day, day, version]
        row = _first_row(warehouse.query(overall_sql(spec, table, shadow, d), params))
        matched = int(row["n"] or 0)
        k = min(top_k(spec), matched)
        hist = stats.merge(
            c.score_histogram for s in scored.shards for c in s.challengers if c.version == version
        )
        segments = []
        for column in spec.drift.segment_by:
            found = warehouse.query(segment_sql(spec, table, shadow, d, column), params)
            for seg in found.to_pylist()[: spec.drift.max_segments]:
                seg = {k.lower(): v for k, v in seg.items()}
                n = int(seg["n"])
                segments.append(
                    SegmentComparison(
                        column,
                        "(null)" if seg["seg"] is None else str(seg["seg"]),
                        n,
                        _number(seg["spearman"]),
                        _rate(seg["flips"], n),
                    )
                )
        out.append(
            Comparison(
                ref=ref,
                version=version,
                champion_rows=champion_rows,
                challenger_rows=_count(warehouse, shadow, day, version),
                matched_rows=matched,
                psi=stats.psi(champion_hist, hist),
                spearman=_number(row["spearman"]),
                top_k=k,
                top_k_overlap=_rate(row["both_top"], k),
                label_flip_rate=_rate(row["flips"], matched),
                segments=segments,
            )
        )
    return out


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_markdown(comparisons: list[Comparison]) -> str:
    lines = [
        "| challenger | version | same rows | PSI vs champion | Spearman | top-K overlap "
        "| label flips |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.ref} | {c.version} | {'yes' if c.same_rows else 'NO'} | {_fmt(c.psi)} "
            f"| {_fmt(c.spearman)} | {_fmt(c.top_k_overlap)} (K={c.top_k}) "
            f"| {_fmt(c.label_flip_rate)} |"
        )
    segments = [(c, s) for c in comparisons for s in c.segments]
    if segments:
        lines += [
            "",
            "| challenger | segment | rows | Spearman | label flips |",
            "|---|---|---|---|---|",
        ]
        for c, s in segments:
            lines.append(
                f"| {c.ref} | {s.column}={s.value} | {s.rows:,} | {_fmt(s.spearman)} "
                f"| {_fmt(s.label_flip_rate)} |"
            )
    return "\n".join(lines)


def metadata(comparisons: list[Comparison]) -> dict[str, Any]:
    """Numbers the UI plots over partitions, per challenger ref."""
    md: dict[str, Any] = {}
    for c in comparisons:
        values = {
            "psi": c.psi,
            "spearman": c.spearman,
            "top_k_overlap": c.top_k_overlap,
            "label_flip_rate": c.label_flip_rate,
            "rows": c.matched_rows,
        }
        md.update({f"{c.ref}/{k}": round(v, 6) for k, v in values.items() if v is not None})
        for s in c.segments:
            if s.label_flip_rate is not None:
                md[f"{c.ref}/label_flip_rate/{s.column}={s.value}"] = round(s.label_flip_rate, 6)
    return md
