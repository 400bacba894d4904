"""Scored shards: stream one shard's row groups through the model into one Parquet file."""

import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from batch_inference_assets.contracts import Contract
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.parquet_files import place_file, temp_file_for
from batch_inference_assets.models.kinds import Scored, Scorer
from batch_inference_assets.models.matrix import feature_matrix
from batch_inference_assets.records import (
    Histogram,
    ModelHandle,
    ScoredShards,
    Shard,
    ShardManifest,
    ShardScore,
)
from batch_inference_assets.spec import PARTITION_COLUMN, SCORE_COLUMN
from batch_inference_assets.stages import stats

FEATURE_SAMPLE_ROWS_PER_BATCH = 8_192


class ShardTimeout(TimeoutError):
    pass


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
    timeout_seconds: float = float("inf")


def scored_path(
    object_store: ObjectStore, pipeline: str, partition: str, run_id: str, shard: Shard
) -> UPath:
    """One folder per run, so no run reads or overwrites another's shards; deterministic per
    run and shard, so a retry overwrites instead of duplicating."""
    return object_store.path(pipeline, "scored", partition, run_id, f"{shard.key}.parquet")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def iter_shard_batches(
    shard: Shard, columns: list[str], batch_rows: int, object_store: ObjectStore
) -> Iterator[pa.RecordBatch]:
    for part in shard.parts:
        with object_store.open_path(part.path).open("rb") as fh:
            # pre_buffer would read whole row groups' column chunks ahead: keep memory bounded.
            reader = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
            yield from reader.iter_batches(
                batch_size=batch_rows, row_groups=part.row_groups, columns=columns, use_threads=True
            )


def output_batch(
    batch: pa.RecordBatch, scored: Scored, model: ModelHandle, run: ScoringRun
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
    for name in run.id_columns:
        values[name] = batch.column(name).cast(schema.field(name).type)
    return pa.RecordBatch.from_arrays([values[f.name].cast(f.type) for f in schema], schema=schema)


class _ShardAccumulator:
    def __init__(self, model: ModelHandle) -> None:
        self.model = model
        keys = [f.name for f in model.features] + [stats.SCORE_KEY]
        self.counts = {k: np.zeros(len(model.reference[k].counts), dtype=np.int64) for k in keys}
        self.rows = 0
        self.positives = 0
        self.confidence_sum = 0.0
        self.score_sum = 0.0

    def add(self, x: np.ndarray, scores: np.ndarray) -> None:
        # Feature histograms from a systematic sample (PSI needs distributions, not every row);
        # the score histogram, positives and confidence stay exact.
        sample = x[:: max(1, len(x) // FEATURE_SAMPLE_ROWS_PER_BATCH)]
        for j, f in enumerate(self.model.features):
            self.counts[f.name] += stats.bucket_counts(
                np.ascontiguousarray(sample[:, j]), self.model.reference[f.name].edges
            )
        self.counts[stats.SCORE_KEY] += stats.bucket_counts(
            scores, self.model.reference[stats.SCORE_KEY].edges
        )
        self.rows += len(scores)
        self.score_sum += float(np.nansum(scores))
        if self.model.kind == "lightgbm_binary":
            self.positives += int((scores >= self.model.label_threshold).sum())
            self.confidence_sum += float(np.maximum(scores, 1.0 - scores).sum())
        elif self.model.kind == "lightgbm_multiclass":  # the score is the argmax probability
            self.confidence_sum += float(scores.sum())

    def histograms(self) -> dict[str, Histogram]:
        return {
            k: Histogram(edges=self.model.reference[k].edges, counts=c.tolist())
            for k, c in self.counts.items()
        }


def score_shard(
    shard: Shard,
    model: ModelHandle,
    scorer: Scorer,
    run: ScoringRun,
    object_store: ObjectStore,
) -> ShardScore:
    """Score `shard` batch by batch; the output file appears whole or not at all."""
    started = time.perf_counter()
    target = scored_path(object_store, run.pipeline, run.partition.isoformat(), run.run_id, shard)
    columns = list(dict.fromkeys([*run.id_columns, *(f.name for f in model.features)]))
    acc = _ShardAccumulator(model)
    tmp = temp_file_for(target)
    try:
        with pq.ParquetWriter(tmp, run.output.arrow_schema(), compression="zstd") as writer:
            for batch in iter_shard_batches(shard, columns, run.batch_rows, object_store):
                x = feature_matrix(batch, model.features)
                scored = scorer.score(batch, x)
                acc.add(x, scored.score)
                writer.write_batch(output_batch(batch, scored, model, run))
                elapsed = time.perf_counter() - started
                if elapsed > run.timeout_seconds:
                    raise ShardTimeout(
                        f"{shard.key} exceeded its {run.timeout_seconds:g}s timeout after "
                        f"{acc.rows} of {shard.rows} rows ({elapsed:.1f}s)"
                    )
        place_file(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
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
        histograms=acc.histograms(),
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
