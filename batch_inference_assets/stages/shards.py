"""Shard manifest: split a partition's Parquet row groups into shards balanced by size."""

import heapq
import math
from collections import defaultdict

from batch_inference_assets.records import FeatureExport, Shard, ShardManifest, ShardPart
from batch_inference_assets.spec import Sharding


def shard_count(rows: int, nbytes: int, n_units: int, sharding: Sharding) -> int:
    """Enough shards to meet every size target, capped by parallelism and row-group count."""
    wanted = 1
    if sharding.target_rows:
        wanted = max(wanted, math.ceil(rows / sharding.target_rows))
    if sharding.target_mb:
        wanted = max(wanted, math.ceil(nbytes / (sharding.target_mb * 1024 * 1024)))
    return max(1, min(wanted, sharding.max_parallel, n_units))


def plan_shards(export: FeatureExport, sharding: Sharding) -> ShardManifest:
    """Largest row group first into the lightest shard (LPT), so shards end up near-equal."""
    units = [(g.bytes, g.rows, f.path, g.index) for f in export.files for g in f.row_groups]
    n = shard_count(export.rows, export.bytes, len(units), sharding) if units else 0
    heap = [(0, 0, i) for i in range(n)]
    members: list[list[tuple[str, int, int, int]]] = [[] for _ in range(n)]
    for nbytes, rows, path, index in sorted(units, key=lambda u: (-u[0], u[2], u[3])):
        load, count, i = heapq.heappop(heap)
        members[i].append((path, index, rows, nbytes))
        heapq.heappush(heap, (load + nbytes, count + rows, i))
    order = {f.path: k for k, f in enumerate(export.files)}
    shards = []
    for i, groups in enumerate(members):
        by_file: dict[str, list[int]] = defaultdict(list)
        for path, index, _, _ in groups:
            by_file[path].append(index)
        parts = [
            ShardPart(path=p, row_groups=sorted(ix))
            for p, ix in sorted(by_file.items(), key=lambda kv: order[kv[0]])
        ]
        shards.append(
            Shard(
                index=i,
                parts=parts,
                rows=sum(g[2] for g in groups),
                bytes=sum(g[3] for g in groups),
            )
        )
    rows_by_shard = [s.rows for s in shards]
    return ShardManifest(
        pipeline=export.pipeline,
        partition=export.partition,
        shards=[
            s.model_copy(update={"partition_rows": export.rows, "rows_by_shard": rows_by_shard})
            for s in shards
        ],
        rows=export.rows,
        bytes=export.bytes,
        export_seconds=export.query_seconds,
    )
