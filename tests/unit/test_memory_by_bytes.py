"""Scoring batches are bounded by bytes as well as rows: wide rows make smaller batches, and a
row wider than a whole batch may be fails naming its shard, its size and the setting."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.records import Shard, ShardPart
from batch_inference_assets.spec import Sharding
from batch_inference_assets.stages import scoring

MIB = 2**20
ROWS = 20_000
ROW_GROUP_ROWS = 5_000
COLUMNS = ["customer_id", "note", "segment", "tenure"]


def _wide_rows(rows: int = ROWS, wide_row: int | None = None) -> pa.Table:
    """~800 bytes a row in memory: a unique note (PLAIN in the file) and a segment of two long
    values (dictionary encoded: a few bytes a row in the file, 500 in memory)."""
    rng = np.random.default_rng(7)
    lengths = rng.integers(100, 500, rows)
    notes = ["n" * int(n) for n in lengths]
    if wide_row is not None:
        notes[wide_row] = "w" * (2 * MIB)
    return pa.table(
        {
            "customer_id": pa.array(np.arange(rows, dtype=np.int64)),
            "note": pa.array(notes, pa.string()),
            "segment": pa.array(["a" * 500 if i % 2 else "b" * 500 for i in range(rows)]),
            "tenure": pa.array(rng.random(rows)),
            "unread": pa.array(["u" * 1_000] * rows),  # not asked for: must not count
        }
    )


def _shard(tmp_path: Path, table: pa.Table) -> tuple[Shard, LocalObjectStore]:
    path = tmp_path / "part_0.parquet"
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    groups = pq.ParquetFile(path).metadata.num_row_groups
    shard = Shard(
        index=3,
        parts=[ShardPart(path=str(path), row_groups=list(range(groups)))],
        rows=table.num_rows,
        bytes=path.stat().st_size,
    )
    return shard, LocalObjectStore(root=str(tmp_path))


def test_batches_never_exceed_the_byte_bound_on_wide_rows(tmp_path: Path) -> None:
    table = _wide_rows()
    shard, store = _shard(tmp_path, table)
    batches = list(scoring.iter_shard_batches(shard, COLUMNS, 65_536, store, batch_bytes=MIB))
    assert max(b.nbytes for b in batches) <= MIB
    assert max(b.num_rows for b in batches) <= 65_536
    # Every row once, in order, and not cut into needlessly small batches.
    assert pa.Table.from_batches(batches).equals(table.select(COLUMNS))
    assert len(batches) <= 2 * table.select(COLUMNS).nbytes // MIB + 4


def test_rows_still_bound_batches_of_narrow_rows(tmp_path: Path) -> None:
    shard, store = _shard(tmp_path, _wide_rows())
    batches = list(
        scoring.iter_shard_batches(shard, ["customer_id", "tenure"], 1_024, store, 64 * MIB)
    )
    # Batches end with their row group: 4 x (4 full ones and the rest).
    assert [b.num_rows for b in batches] == ([1_024] * 4 + [ROW_GROUP_ROWS - 4 * 1_024]) * 4


def test_what_is_read_is_bounded_too_not_only_what_is_yielded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file says ~250 bytes a row (the segment is dictionary encoded); memory holds ~800.
    Rows per read come from what the rows read so far took, so pyarrow is never asked for a
    batch well above the bound (which slicing afterwards would not un-allocate)."""
    shard, store = _shard(tmp_path, _wide_rows())
    read: list[int] = []
    iter_batches = pq.ParquetFile.iter_batches

    def recording(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        for batch in iter_batches(self, *args, **kwargs):
            read.append(batch.nbytes)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", recording)
    assert (
        sum(b.num_rows for b in scoring.iter_shard_batches(shard, COLUMNS, 65_536, store, MIB))
        == ROWS
    )
    assert max(read) <= 1.25 * MIB, read


def test_a_row_wider_than_the_bound_fails_naming_shard_row_size_and_setting(
    tmp_path: Path,
) -> None:
    shard, store = _shard(tmp_path, _wide_rows(wide_row=12_345))
    with pytest.raises(scoring.RowTooWide) as raised:
        for batch in scoring.iter_shard_batches(shard, COLUMNS, 65_536, store, batch_bytes=MIB):
            assert batch.nbytes <= MIB
    message = str(raised.value)
    assert "shard_00003" in message
    assert f"row {12_345 - 2 * ROW_GROUP_ROWS} of row group 2 in " in message
    assert "part_0.parquet" in message
    size = int(message.split(" bytes in memory")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert 2 * MIB < size < 2 * MIB + 2_000
    assert "raise sharding.batch_bytes" in message and f"({MIB:,})" in message
    # The asset wraps ValueErrors with the pipeline and the partition.
    assert isinstance(raised.value, ValueError)


def test_batch_bytes_defaults_to_64_mib_and_refuses_tiny_bounds() -> None:
    assert Sharding().batch_bytes == 64 * MIB
    assert "batch_rows" in (Sharding.model_fields["batch_bytes"].description or "")
    with pytest.raises(ValidationError, match="batch_bytes"):
        Sharding(batch_bytes=1_000)
