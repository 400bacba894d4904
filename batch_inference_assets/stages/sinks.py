"""The published partition as a stream of Arrow batches, for the sinks (Redis, Kafka).

A sink reads the table, never the scored shards, so it only ever carries what the warehouse
holds. The warehouse writes the rows as Parquet files under the run's own folder
(`<pipeline>/<stage>/<day>/<run_id>/`); the batches are read from them one at a time, so memory
stays bounded whatever the partition's size, and the folder is removed when the stream ends.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq

from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import Warehouse
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages.exports import export_published, parquet_rows


@contextmanager
def published_batches(
    spec: PipelineSpec,
    warehouse: Warehouse,
    object_store: ObjectStore,
    day: date,
    run_id: str,
    *,
    stage: str,
    columns: Sequence[str],
    batch_rows: int,
) -> Iterator[tuple[int, Iterator[pa.RecordBatch]]]:
    """(rows, batches) of the published partition's `columns`, in id order."""
    where = f"{spec.name}/{stage}/{day.isoformat()}/{run_id}"
    folder = object_store.path(where)
    object_store.remove_tree(folder)  # what an earlier attempt of this run left
    try:
        files = export_published(
            spec, warehouse, object_store, day, run_id, stage, where,
            columns=list(dict.fromkeys(columns)),
        )  # fmt: skip
        rows = sum(parquet_rows(p) for p in files)
        yield rows, _batches(files, batch_rows)
    finally:
        object_store.remove_run_folder(folder)


def _batches(files: Sequence, batch_rows: int) -> Iterator[pa.RecordBatch]:
    for path in files:
        with path.open("rb") as fh:
            reader = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
            yield from reader.iter_batches(batch_size=batch_rows)
