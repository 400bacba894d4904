from batch_inference_assets.records import ExportedFile, FeatureExport, RowGroup
from batch_inference_assets.spec import Sharding
from batch_inference_assets.stages.shards import plan_shards, shard_count


def _export(sizes_per_file: list[list[int]]) -> FeatureExport:
    files = [
        ExportedFile(
            path=f"f{i}.parquet",
            rows=sum(sizes),
            bytes=sum(sizes) * 10,
            row_groups=[RowGroup(index=j, rows=s, bytes=s * 10) for j, s in enumerate(sizes)],
        )
        for i, sizes in enumerate(sizes_per_file)
    ]
    return FeatureExport(
        pipeline="p", partition="2026-10-01", files=files,
        rows=sum(f.rows for f in files), bytes=sum(f.bytes for f in files),
        columns={}, query_seconds=0.0,
    )  # fmt: skip


def test_every_row_group_lands_in_exactly_one_shard() -> None:
    export = _export([[100, 100, 50], [300, 20, 20, 10]])
    manifest = plan_shards(export, Sharding(target_rows=200, max_parallel=8))
    seen = [(p.path, g) for s in manifest.shards for p in s.parts for g in p.row_groups]
    assert sorted(seen) == sorted((f.path, g.index) for f in export.files for g in f.row_groups)
    assert sum(s.rows for s in manifest.shards) == export.rows == manifest.rows


def test_shards_are_balanced_by_size_not_round_robin() -> None:
    # Round-robin over these would give shards of 900 and 120 rows.
    export = _export([[500, 10, 400, 10, 50, 50, 0, 0]])
    manifest = plan_shards(export, Sharding(target_rows=500, max_parallel=2))
    rows = sorted(s.rows for s in manifest.shards)
    assert rows == [510, 510]


def test_count_follows_targets_and_caps() -> None:
    assert (
        shard_count(1_000, 0, 100, Sharding(target_rows=100, target_mb=None, max_parallel=64)) == 10
    )
    assert (
        shard_count(1_000, 0, 100, Sharding(target_rows=100, target_mb=None, max_parallel=4)) == 4
    )
    assert shard_count(1_000, 0, 3, Sharding(target_rows=100, target_mb=None, max_parallel=64)) == 3
    mb = 1024 * 1024
    assert (
        shard_count(10, 10 * mb, 100, Sharding(target_rows=None, target_mb=2, max_parallel=64)) == 5
    )
    # The stricter of the two targets wins.
    assert (
        shard_count(1_000, 10 * mb, 100, Sharding(target_rows=500, target_mb=1, max_parallel=64))
        == 10
    )


def test_no_rows_no_shards() -> None:
    assert plan_shards(_export([]), Sharding()).shards == []


def test_plan_is_deterministic() -> None:
    export = _export([[7, 3, 9, 1], [5, 5, 5]])
    a = plan_shards(export, Sharding(target_rows=10, max_parallel=3))
    b = plan_shards(export, Sharding(target_rows=10, max_parallel=3))
    assert a == b
