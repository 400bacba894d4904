"""Source features: run the feature query in the warehouse and export the rows as Parquet."""

import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from batch_inference_assets.contracts import quote_identifier, sql_identifier
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import QueryTag, Warehouse
from batch_inference_assets.records import ExportedFile, FeatureExport, FeatureInfo, RowGroup
from batch_inference_assets.spec import PARTITION_COLUMN, PipelineSpec
from batch_inference_assets.sql import SqlTemplate, partition_values

MAX_EXPORT_FILE_BYTES = 256 * 1024 * 1024
_ROW_GROUP_CAP = 122_880


def row_group_rows(spec: PipelineSpec) -> int:
    """Row groups small enough that a shard holds several, so shards can be balanced."""
    target = spec.sharding.target_rows or _ROW_GROUP_CAP * 4
    return max(2_048, min(_ROW_GROUP_CAP, target // 4))


def render_query(
    spec: PipelineSpec, schema: str, day: date, window: tuple[datetime, datetime]
) -> tuple[str, list[object]]:
    template = SqlTemplate.parse(spec.features.sql)
    return template.render(schema=schema, values=partition_values(day, window, spec.features.ctx))


def describe_file(path: UPath) -> ExportedFile:
    with path.open("rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    groups = [
        RowGroup(index=i, rows=meta.row_group(i).num_rows, bytes=meta.row_group(i).total_byte_size)
        for i in range(meta.num_row_groups)
    ]
    return ExportedFile(
        path=str(path), rows=meta.num_rows, bytes=sum(g.bytes for g in groups), row_groups=groups
    )


def read_schema(path: UPath) -> pa.Schema:
    with path.open("rb") as fh:
        return pq.read_schema(fh)


def only_unpublished(
    spec: PipelineSpec, warehouse: Warehouse, sql: str, params: list[Any], day: date
) -> tuple[str, list[Any]]:
    """Incremental mode: the feature rows whose ids the partition does not have yet."""
    table = warehouse.published_table(spec.output.table)
    if table is None:
        return sql, params
    ids = " AND ".join(
        f"o.{sql_identifier(c, warehouse.dialect)} = f.{sql_identifier(c, warehouse.dialect)}"
        for c in spec.features.id_columns
    )
    part = sql_identifier(PARTITION_COLUMN, warehouse.dialect)
    wrapped = (
        f"SELECT f.* FROM ({sql}) AS f WHERE NOT EXISTS "
        f"(SELECT 1 FROM {table} AS o WHERE o.{part} = ? AND {ids})"
    )
    return wrapped, [*params, day]


def published_rows(spec: PipelineSpec, warehouse: Warehouse, day: date) -> int:
    """Rows the output table already holds for the partition (0 before its first run)."""
    table = warehouse.published_table(spec.output.table)
    if table is None:
        return 0
    part = sql_identifier(PARTITION_COLUMN, warehouse.dialect)
    result = warehouse.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {part} = ?", [day])
    return int(result.column(0)[0].as_py())


def export_features(
    spec: PipelineSpec,
    warehouse: Warehouse,
    object_store: ObjectStore,
    day: date,
    window: tuple[datetime, datetime],
    run_id: str,
) -> FeatureExport:
    partition = day.isoformat()
    sql, params = render_query(spec, warehouse.feature_schema, day, window)
    if spec.output.mode == "incremental":
        sql, params = only_unpublished(spec, warehouse, sql, params, day)
    # One folder per run: no run reads or deletes another's export. A retry of this run's step
    # starts it afresh.
    folder = f"{spec.name}/features/{partition}/{run_id}"
    object_store.remove_tree(object_store.path(folder))
    started = time.perf_counter()
    paths = warehouse.export_query(
        sql,
        params,
        object_store,
        folder,
        max_file_bytes=MAX_EXPORT_FILE_BYTES,
        row_group_rows=row_group_rows(spec),
        tag=QueryTag(spec.name, partition, run_id, "source_features"),
    )
    seconds = time.perf_counter() - started
    files = [f for f in (describe_file(p) for p in paths) if f.rows > 0]
    columns = {f.name: str(f.type) for f in read_schema(paths[0])} if paths else {}
    return FeatureExport(
        pipeline=spec.name,
        partition=partition,
        files=files,
        rows=sum(f.rows for f in files),
        bytes=sum(f.bytes for f in files),
        columns=columns,
        query_seconds=round(seconds, 3),
    )


@dataclass(frozen=True)
class FeatureProfile:
    """What the checks on the exported rows need, from one scan of them.

    `missing` counts nulls and NaN together (LightGBM treats both as missing, and Parquet
    statistics count only nulls); `infinite` counts ±inf; `unseen` counts categorical values
    outside the model's category list."""

    rows: int
    duplicate_ids: int
    null_ids: int
    missing: dict[str, int]
    infinite: dict[str, int]
    unseen: dict[str, int]


def profile_export(
    export: FeatureExport, id_columns: list[str], features: list[FeatureInfo],
    object_store: ObjectStore,
) -> FeatureProfile:  # fmt: skip
    """One DuckDB scan of the exported Parquet: ids, and per feature its missing, infinite and
    unseen values. Parquet statistics are not trusted: they do not count NaN."""
    if not export.files:
        return FeatureProfile(0, 0, 0, *({f.name: 0 for f in features} for _ in range(3)))
    ids = ", ".join(quote_identifier(c) for c in id_columns)
    null_id = " OR ".join(f"{quote_identifier(c)} IS NULL" for c in id_columns)
    parts, params = [], []
    for f in features:
        c = quote_identifier(f.name)
        if f.type == "float64":
            # DuckDB holds NaN equal to NaN: nullif makes it null, and COUNT skips both. This
            # and a sum (not FILTERs with OR) scan 5M rows x 30 features in 1.3 s, not 1.8 s.
            parts += [f"COUNT(*) - COUNT(nullif({c}, 'NaN'::DOUBLE))",
                      f"COALESCE(SUM(isinf({c})::INTEGER), 0)", "0"]  # fmt: skip
        else:
            unseen = f"{c} IS NOT NULL AND NOT list_contains(?, {c})"
            parts += [f"COUNT(*) - COUNT({c})", "0", f"COUNT(*) FILTER (WHERE {unseen})"]
            params.append(list(f.categories))
    con = duckdb.connect(
        config={
            "memory_limit": "512MB",
            "preserve_insertion_order": False,
            # Parquet min/max statistics leave NaN out (pyarrow's writer among others), and
            # DuckDB would fold isnan() to false from them: NaNs would count as values.
            "disabled_optimizers": "statistics_propagation",
        }
    )
    try:
        if not object_store.is_local:
            con.register_filesystem(object_store.base.fs)
        con.read_parquet([f.path for f in export.files]).create_view("features")
        row = con.execute(
            f"SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT {ids} FROM features "
            f"GROUP BY {ids} HAVING COUNT(*) > 1)), COUNT(*) FILTER (WHERE {null_id}), "
            f"{', '.join(parts)} FROM features",
            params,
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    counts = [int(v) for v in row[3:]]
    names = [f.name for f in features]
    return FeatureProfile(
        rows=int(row[0]),
        duplicate_ids=int(row[1]),
        null_ids=int(row[2]),
        missing=dict(zip(names, counts[0::3], strict=True)),
        infinite=dict(zip(names, counts[1::3], strict=True)),
        unseen=dict(zip(names, counts[2::3], strict=True)),
    )


def export_schema(export: FeatureExport, object_store: ObjectStore) -> pa.Schema | None:
    """The exported Parquet schema; None when the export wrote no file (no rows)."""
    return read_schema(object_store.open_path(export.files[0].path)) if export.files else None
