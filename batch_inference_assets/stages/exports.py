"""Files of a published partition beside the table: Parquet and CSV exports, and the top K rows.

Both read the published table (never the scored shards), so a file only ever holds what the
warehouse holds. The warehouse writes the Parquet files; CSV is converted from them batch by
batch, so memory stays bounded whatever the partition's size.
"""

from collections.abc import Sequence
from datetime import date

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from upath import UPath

from batch_inference_assets.contracts import sql_identifier
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.parquet_files import place_file, temp_file_for
from batch_inference_assets.io.warehouse import QueryTag, Warehouse
from batch_inference_assets.records import ExportedPredictions
from batch_inference_assets.spec import PARTITION_COLUMN, PipelineSpec
from batch_inference_assets.stages.features import MAX_EXPORT_FILE_BYTES

ROW_GROUP_ROWS = 65_536


def partition_query(
    spec: PipelineSpec,
    warehouse: Warehouse,
    stage: str,
    top_k: bool = False,
    columns: Sequence[str] = (),
) -> str:
    """The published partition's rows (`columns`, default all) in id order, or its top K."""
    table = warehouse.published_table(spec.output.table)
    if table is None:
        raise ValueError(f"the output table {spec.output.table} does not exist")
    d = warehouse.dialect
    cols = ", ".join(sql_identifier(c, d) for c in columns or spec.output_contract.names)
    ids = ", ".join(sql_identifier(c, d) for c in spec.features.id_columns)
    sql = f"SELECT {cols} FROM {table} WHERE {sql_identifier(PARTITION_COLUMN, d)} = ?"
    if top_k and spec.exports.top_k:
        k = spec.exports.top_k
        direction = "DESC" if k.descending else "ASC"
        # Ties broken by id, so the same partition always gives the same K rows.
        return f"{sql} ORDER BY {sql_identifier(k.by, d)} {direction}, {ids} LIMIT {int(k.k)}"
    return f"{sql} ORDER BY {ids}"


def export_partition(
    spec: PipelineSpec,
    warehouse: Warehouse,
    object_store: ObjectStore,
    day: date,
    run_id: str,
    *,
    stage: str,
    formats: list[str],
) -> ExportedPredictions:
    """Write the partition's rows (stage "exports") or its top K ("top_k") under
    `<pipeline>/<stage>/<day>/<format>/`, replacing what an earlier run wrote."""
    partition = day.isoformat()
    folder = f"{spec.name}/{stage}/{partition}"
    object_store.remove_tree(object_store.path(folder))
    parquet = export_published(
        spec, warehouse, object_store, day, run_id, stage, f"{folder}/parquet",
        top_k=stage == "top_k",
    )  # fmt: skip
    rows = sum(parquet_rows(p) for p in parquet)
    files: dict[str, list[str]] = {}
    if "csv" in formats:
        files["csv"] = [str(parquet_to_csv(p, object_store.path(folder, "csv"))) for p in parquet]
    if "parquet" in formats:
        files["parquet"] = [str(p) for p in parquet]
    else:
        object_store.remove_tree(object_store.path(folder, "parquet"))
    return ExportedPredictions(pipeline=spec.name, partition=partition, files=files, rows=rows)


def export_published(
    spec: PipelineSpec,
    warehouse: Warehouse,
    object_store: ObjectStore,
    day: date,
    run_id: str,
    stage: str,
    folder: str,
    *,
    top_k: bool = False,
    columns: Sequence[str] = (),
) -> list[UPath]:
    """The published partition's rows (`columns`, default all; or its top K) as Parquet files
    the warehouse writes into the store's (empty) `folder`."""
    return warehouse.export_query(
        partition_query(spec, warehouse, stage, top_k=top_k, columns=columns),
        [day],
        object_store,
        folder,
        max_file_bytes=MAX_EXPORT_FILE_BYTES,
        row_group_rows=ROW_GROUP_ROWS,
        tag=QueryTag(spec.name, day.isoformat(), run_id, stage),
    )


def parquet_rows(path: UPath) -> int:
    with path.open("rb") as fh:
        return int(pq.ParquetFile(fh).metadata.num_rows)


def parquet_to_csv(source: UPath, folder: UPath) -> UPath:
    """One CSV file (with a header) per Parquet file, written whole or not at all."""
    target = folder / (source.name.rsplit(".", 1)[0] + ".csv")
    tmp = temp_file_for(target)
    try:
        with source.open("rb") as fh, tmp.open("wb") as out:
            reader = pq.ParquetFile(fh)
            with pacsv.CSVWriter(out, reader.schema_arrow) as writer:
                for batch in reader.iter_batches(batch_size=ROW_GROUP_ROWS):
                    writer.write_batch(batch)
        place_file(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
