"""Writing Parquet to the object store: local temp files, moved or uploaded whole when done."""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath


def is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def place_file(local: Path, target: UPath) -> None:
    """Put a finished local file at `target` in one step (rename locally, one PUT remotely)."""
    if is_local(target):
        Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target.path)
    else:
        target.fs.put_file(str(local), target.path)


def temp_file_for(target: UPath) -> Path:
    """A temp file on the same filesystem as a local target (so the rename is atomic), named
    after the target: what a killed attempt at the same target left behind is removed here."""
    folder = Path(target.path).parent if is_local(target) else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f".bi-{hashlib.sha256(str(target).encode()).hexdigest()[:16]}.part-"
    for stale in folder.glob(f"{prefix}*.parquet.tmp"):
        stale.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".parquet.tmp")
    os.close(fd)
    return Path(name)


class RotatingParquetWriter:
    """Streams Arrow tables into `part_<i>.parquet` files of bounded size under `destination`.

    Rows are buffered up to one row group, so memory is bounded by `row_group_rows`.
    """

    def __init__(self, destination: UPath, *, max_file_bytes: int, row_group_rows: int) -> None:
        self.destination = destination
        self.max_file_bytes = max_file_bytes
        self.row_group_rows = row_group_rows
        self.written: list[UPath] = []
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._local: Path | None = None
        self._schema: pa.Schema | None = None
        self._tmpdir = Path(tempfile.mkdtemp(prefix="bi-export-"))

    def write(self, table: pa.Table) -> None:
        if self._schema is None:
            self._schema = table.schema
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffered:
            return
        data = pa.concat_tables(self._buffer)
        self._buffer, self._buffered = [], 0
        if self._writer is None:
            self._local = self._tmpdir / f"part_{len(self.written)}.parquet"
            self._writer = pq.ParquetWriter(self._local, data.schema, compression="zstd")
        self._writer.write_table(data, row_group_size=self.row_group_rows)
        if self._local is not None and self._local.stat().st_size >= self.max_file_bytes:
            self._finish_file()

    def _finish_file(self) -> None:
        if self._writer is None or self._local is None:
            return
        self._writer.close()
        target = self.destination / self._local.name
        place_file(self._local, target)
        self.written.append(target)
        self._writer, self._local = None, None

    def close(self) -> list[UPath]:
        try:
            self._flush()
            self._finish_file()
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        return self.written
