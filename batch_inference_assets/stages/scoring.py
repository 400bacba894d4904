"""Scored shards: stream one shard's row groups through the model into one Parquet file."""

import contextlib
import os
import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from batch_inference_assets.contracts import Contract
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.parquet_files import place_file, temp_file_for
from batch_inference_assets.models.kinds import Scored, Scorer
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.models.reasons import ShardReasons, column_names
from batch_inference_assets.records import (
    ChallengerScore,
    Histogram,
    ModelHandle,
    ScoredShards,
    Shard,
    ShardManifest,
    ShardScore,
)
from batch_inference_assets.spec import PARTITION_COLUMN, SCORE_COLUMN, ExplainSpec, Sharding
from batch_inference_assets.stages import stats

DEFAULT_BATCH_BYTES: int = Sharding.model_fields["batch_bytes"].default
# Rows read once to learn how much bigger in memory than in the file a shard's rows are.
PROBE_ROWS = 1_024
# Batches aim a little below batch_bytes: rows vary in width, and a batch above it is cut.
FILL = 0.9


class ShardTimeout(TimeoutError):
    pass


class RowTooWide(ValueError):
    """A row whose columns alone are above the byte bound of a batch: no batch size fits it."""


@dataclass(frozen=True)
class ScoringRun:
    """What every row of one partition's scoring run is stamped with."""

    pipeline: str
    partition: date
    run_id: str
    scored_at: datetime
    id_columns: list[str]
    output: Contract
    batch_rows: int
    batch_bytes: int = DEFAULT_BATCH_BYTES
    timeout_seconds: float = float("inf")
    passthrough: list[str] = field(default_factory=list)  # input columns copied to the output
    explain: ExplainSpec | None = None  # reason codes, see models/reasons.py

    @property
    def copied_columns(self) -> list[str]:
        """Input columns an output row carries as they are: the ids, then the passthrough."""
        return [*self.id_columns, *self.passthrough]


def scored_path(
    object_store: ObjectStore, pipeline: str, partition: str, run_id: str, shard: Shard
) -> UPath:
    """One folder per run, so no run reads or overwrites another's shards; deterministic per
    run and shard, so a retry overwrites instead of duplicating."""
    return object_store.path(pipeline, "scored", partition, run_id, f"{shard.key}.parquet")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _encoded_bytes_per_row(row_group: pq.RowGroupMetaData, columns: list[str]) -> float:
    """The selected columns' uncompressed size in the file, per row: what sizes a batch before
    anything is read. Dictionary and run-length encoded columns are much smaller there than
    decoded, hence _BatchSizer's correction."""
    wanted = set(columns)
    chunks = (row_group.column(i) for i in range(row_group.num_columns))
    size = sum(
        c.total_uncompressed_size for c in chunks if c.path_in_schema.split(".")[0] in wanted
    )
    return size / max(row_group.num_rows, 1)


def _read(
    reader: pq.ParquetFile, group: int, columns: list[str], rows: int
) -> Iterator[pa.RecordBatch]:
    return reader.iter_batches(
        batch_size=rows, row_groups=[group], columns=columns, use_threads=True
    )


@dataclass
class _BatchSizer:
    """Rows per batch from the file's sizes, corrected by how much bigger the rows read so far
    were in memory than in the file."""

    batch_rows: int
    batch_bytes: int
    read_bytes: int = 0
    encoded_bytes: float = 0.0

    @property
    def calibrated(self) -> bool:
        return self.encoded_bytes > 0

    def observe(self, batch: pa.RecordBatch, encoded_per_row: float) -> None:
        self.read_bytes += batch.nbytes
        self.encoded_bytes += encoded_per_row * batch.num_rows

    def rows(self, encoded_per_row: float, limit: int | None = None) -> int:
        ratio = self.read_bytes / self.encoded_bytes if self.calibrated else 1.0
        per_row = encoded_per_row * ratio
        fit = int(FILL * self.batch_bytes // per_row) if per_row > 0 else self.batch_rows
        return max(1, min(fit, self.batch_rows, limit or self.batch_rows))


def _within_bytes(
    batch: pa.RecordBatch, batch_bytes: int, first_row: int, halve: bool = False
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """`batch` cut into zero-copy slices of at most `batch_bytes`, each with the number of its
    first row; a row above the bound on its own comes back alone, for the caller to refuse."""
    n = batch.num_rows
    if batch.nbytes <= batch_bytes or n == 1:
        yield first_row, batch
        return
    # Slices of the average row's width mostly fit at once; those that do not (wide rows among
    # narrow ones) are halved, which keeps the depth logarithmic.
    rows = n // 2 if halve else max(1, int(n * FILL * batch_bytes // batch.nbytes))
    for start in range(0, n, rows):
        yield from _within_bytes(batch.slice(start, rows), batch_bytes, first_row + start, True)


def iter_shard_batches(
    shard: Shard,
    columns: list[str],
    batch_rows: int,
    object_store: ObjectStore,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[pa.RecordBatch]:
    """The shard's rows (only `columns`) in batches of at most `batch_rows` rows and
    `batch_bytes` bytes (RecordBatch.nbytes); raises RowTooWide for a row above `batch_bytes`."""
    sizer = _BatchSizer(batch_rows, batch_bytes)
    for part in shard.parts:
        with object_store.open_path(part.path).open("rb") as fh:
            # pre_buffer would read whole row groups' column chunks ahead: keep memory bounded.
            reader = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
            for group in part.row_groups:
                encoded = _encoded_bytes_per_row(reader.metadata.row_group(group), columns)
                if not sizer.calibrated:  # a few rows first, so the first batch is sized right
                    probe = _read(reader, group, columns, sizer.rows(encoded, PROBE_ROWS))
                    first = next(probe, None)
                    if first is not None:
                        sizer.observe(first, encoded)
                    del probe, first
                start = 0
                for batch in _read(reader, group, columns, sizer.rows(encoded)):
                    sizer.observe(batch, encoded)
                    for row, piece in _within_bytes(batch, batch_bytes, start):
                        if piece.nbytes > batch_bytes:
                            raise RowTooWide(
                                f"{shard.key}: row {row} of row group {group} in {part.path} is "
                                f"{piece.nbytes:,} bytes in memory, more than "
                                f"sharding.batch_bytes ({batch_bytes:,}) allows a whole batch; "
                                f"raise sharding.batch_bytes above {piece.nbytes:,}"
                            )
                        yield piece
                    start += batch.num_rows


def output_batch(
    batch: pa.RecordBatch,
    scored: Scored,
    model: ModelHandle,
    run: ScoringRun,
    reasons: dict[str, pa.Array] | None = None,
) -> pa.RecordBatch:
    n = batch.num_rows
    schema = run.output.arrow_schema()
    values: dict[str, pa.Array] = {
        **scored.columns,
        SCORE_COLUMN: pa.array(scored.score, type=pa.float64()),
        "model_version": pa.repeat(pa.scalar(model.version, pa.string()), n),
        "scored_at": pa.repeat(pa.scalar(run.scored_at, schema.field("scored_at").type), n),
        "run_id": pa.repeat(pa.scalar(run.run_id, pa.string()), n),
        PARTITION_COLUMN: pa.repeat(pa.scalar(run.partition, pa.date32()), n),
    }
    for name in run.copied_columns:
        values[name] = batch.column(name).cast(schema.field(name).type)
    if run.explain is not None:  # rows not explained (or not yet: rows: top_k) have null reasons
        for name in column_names(run.explain.top_k):
            values[name] = (reasons or {}).get(name, pa.nulls(n))
    return pa.RecordBatch.from_arrays([values[f.name].cast(f.type) for f in schema], schema=schema)


def fill_deferred_reasons(
    file: Path, explainer: ShardReasons, schema: pa.Schema, batch_rows: int
) -> None:
    """rows: top_k: rewrite the finished scored file with the reasons of the shard's highest
    scores, known only now. A second pass over the scored rows (narrow: no features), one batch
    at a time, so memory stays that of one batch plus the leaders' feature rows."""
    rewritten = file.with_name(file.name.removesuffix(".parquet.tmp") + ".reasons.parquet.tmp")
    try:
        with (
            pq.ParquetFile(file) as reader,
            pq.ParquetWriter(rewritten, schema, compression="zstd") as writer,
        ):
            start = 0
            for batch in reader.iter_batches(batch_size=batch_rows):
                filled = explainer.columns_at(start, batch.num_rows)
                columns = [filled.get(f.name, batch.column(f.name)).cast(f.type) for f in schema]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
                start += batch.num_rows
        os.replace(rewritten, file)
    finally:
        rewritten.unlink(missing_ok=True)


class _ScoreTally:
    """What a shard's scores add up to, batch by batch: their histogram over fixed edges (the
    champion's reference score edges, so champion and challengers compare bucket by bucket),
    rows, positives, confidence and sum. Feature distributions are drift_stats' own scan of
    the export, not counted here."""

    def __init__(self, model: ModelHandle, edges: list[float]) -> None:
        self.kind, self.threshold, self.edges = model.kind, model.label_threshold, edges
        self.counts = np.zeros(len(edges) + 2, dtype=np.int64)
        self.rows = self.positives = 0
        self.confidence_sum = self.score_sum = 0.0

    def add(self, scores: np.ndarray) -> None:
        self.counts += stats.bucket_counts(scores, self.edges)
        self.rows += len(scores)
        self.score_sum += float(np.nansum(scores))
        if self.kind == "lightgbm_binary":
            self.positives += int((scores >= self.threshold).sum())
            self.confidence_sum += float(np.maximum(scores, 1.0 - scores).sum())
        elif self.kind == "lightgbm_multiclass":  # the score is the argmax probability
            self.confidence_sum += float(scores.sum())

    def histogram(self) -> Histogram:
        return Histogram(edges=self.edges, counts=self.counts.tolist())


class _Shadow:
    """One challenger scoring the champion's batches into its own file."""

    def __init__(
        self, model: ModelHandle, scorer: Scorer, edges: list[float], target: UPath, run: ScoringRun
    ) -> None:
        self.model, self.scorer, self.target, self.run = model, scorer, target, run
        self.tmp = temp_file_for(target)
        self.tally = _ScoreTally(model, edges)

    def add(self, batch: pa.RecordBatch, writer: pq.ParquetWriter) -> None:
        scored = self.scorer.score(batch, feature_matrix(batch, self.model.features))
        self.tally.add(scored.score)
        writer.write_batch(output_batch(batch, scored, self.model, self.run))

    def result(self) -> ChallengerScore:
        return ChallengerScore(
            version=self.model.version,
            ref=self.model.ref,
            path=str(self.target),
            rows=self.tally.rows,
            score_histogram=self.tally.histogram(),
            positives=self.tally.positives,
            score_sum=self.tally.score_sum,
        )


def challenger_path(
    object_store: ObjectStore, run: ScoringRun, version: str, shard: Shard
) -> UPath:
    """Inside the run's scored folder, so retention and cancellation treat it alike."""
    day = run.partition.isoformat()
    return object_store.path(
        run.pipeline, "scored", day, run.run_id, "challengers", version, f"{shard.key}.parquet"
    )


def score_shard(
    shard: Shard,
    model: ModelHandle,
    scorer: Scorer,
    run: ScoringRun,
    object_store: ObjectStore,
    challengers: Sequence[tuple[ModelHandle, Scorer]] = (),
) -> ShardScore:
    """Score `shard` batch by batch, with the champion and each challenger on the same batches
    (one read of the shard); every output file appears whole or not at all."""
    started = time.perf_counter()
    target = scored_path(object_store, run.pipeline, run.partition.isoformat(), run.run_id, shard)
    features = [f.name for m in (model, *(c for c, _ in challengers)) for f in m.features]
    columns = list(dict.fromkeys([*run.copied_columns, *features]))
    edges = model.reference[stats.SCORE_KEY].edges
    acc = _ScoreTally(model, edges)
    names = [f.name for f in model.features]
    explainer = (
        ShardReasons(run.explain, scorer.predictor, names, run.id_columns) if run.explain else None
    )
    shadows = [
        _Shadow(c, s, edges, challenger_path(object_store, run, c.version, shard), run)
        for c, s in challengers
    ]
    tmp = temp_file_for(target)
    schema = run.output.arrow_schema()
    try:
        with contextlib.ExitStack() as files:
            writer = files.enter_context(pq.ParquetWriter(tmp, schema, compression="zstd"))
            shadow_writers = [
                files.enter_context(pq.ParquetWriter(s.tmp, schema, compression="zstd"))
                for s in shadows
            ]
            batches = iter_shard_batches(
                shard, columns, run.batch_rows, object_store, run.batch_bytes
            )
            for batch in batches:
                x = feature_matrix(batch, model.features)
                scored = scorer.score(batch, x)
                acc.add(scored.score)
                why = explainer.batch(batch, x, scored.score) if explainer else None
                writer.write_batch(output_batch(batch, scored, model, run, why))
                for shadow, shadow_writer in zip(shadows, shadow_writers, strict=True):
                    shadow.add(batch, shadow_writer)
                elapsed = time.perf_counter() - started
                if elapsed > run.timeout_seconds:
                    raise ShardTimeout(
                        f"{shard.key} exceeded its {run.timeout_seconds:g}s timeout after "
                        f"{acc.rows} of {shard.rows} rows ({elapsed:.1f}s)"
                    )
        if explainer is not None and explainer.deferred:
            fill_deferred_reasons(tmp, explainer, schema, run.batch_rows)
        for shadow in shadows:  # the challengers' files first: the champion's marks completion
            place_file(shadow.tmp, shadow.target)
        place_file(tmp, target)
    finally:
        for leftover in [tmp, *(s.tmp for s in shadows)]:
            if leftover.exists():
                leftover.unlink()
    return ShardScore(
        index=shard.index,
        path=str(target),
        run_id=run.run_id,
        rows=acc.rows,
        seconds=round(time.perf_counter() - started, 4),
        peak_rss_bytes=peak_rss_bytes(),
        positives=acc.positives,
        confidence_sum=acc.confidence_sum,
        score_sum=acc.score_sum,
        histograms={stats.SCORE_KEY: acc.histogram()},
        challengers=[s.result() for s in shadows],
    )


def collect(
    pipeline: str, manifest: ShardManifest, model: ModelHandle, results: list[ShardScore]
) -> ScoredShards:
    """The partition's scored shards in shard order, with what publish and drift need."""
    return ScoredShards(
        pipeline=pipeline,
        partition=manifest.partition,
        model_version=model.version,
        source_rows=manifest.rows,
        shards=sorted(results, key=lambda r: r.index),
        export_seconds=manifest.export_seconds,
    )
