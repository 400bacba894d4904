from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.records import FeatureExport
from batch_inference_assets.stages.features import describe_file, profile_export


def _export(paths: list[Path]) -> FeatureExport:
    files = [describe_file(UPath(str(p))) for p in paths]
    return FeatureExport(
        pipeline="p", partition="2026-10-01", files=files, rows=sum(f.rows for f in files),
        bytes=0, columns={}, query_seconds=0.0,
    )  # fmt: skip


def test_profile_uses_statistics_and_scans_where_there_are_none(tmp_path: Path) -> None:
    a = pa.table({"id": [1, 2, 3, 3], "x": [1.0, None, None, 4.0], "y": [None, 1.0, 2.0, 3.0]})
    b = pa.table({"id": [4, 5, 5, 5], "x": [None, 1.0, 1.0, 1.0], "y": [1.0, 1.0, None, None]})
    pq.write_table(a, tmp_path / "a.parquet", row_group_size=2)
    pq.write_table(b, tmp_path / "b.parquet", write_statistics=["id", "x"])  # y has none here
    profile = profile_export(
        _export([tmp_path / "a.parquet", tmp_path / "b.parquet"]), ["id"], ["x", "y"],
        LocalObjectStore(root=str(tmp_path)),
    )  # fmt: skip
    assert profile.rows == 8
    assert profile.duplicate_ids == 2  # ids 3 and 5
    assert profile.null_counts == {"x": 3, "y": 3}
