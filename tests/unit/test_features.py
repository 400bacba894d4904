from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.records import FeatureExport, FeatureInfo
from batch_inference_assets.stages.features import describe_file, profile_export


def _export(paths: list[Path]) -> FeatureExport:
    files = [describe_file(UPath(str(p))) for p in paths]
    return FeatureExport(
        pipeline="p", partition="2026-10-01", files=files, rows=sum(f.rows for f in files),
        bytes=0, columns={}, query_seconds=0.0,
    )  # fmt: skip


def test_profile_counts_nan_as_missing_infinity_and_unseen_categories(tmp_path: Path) -> None:
    nan, inf = float("nan"), float("inf")
    a = pa.table({
        "id": [1, 2, 3, 3], "x": [1.0, None, nan, 4.0], "y": [inf, 1.0, 2.0, -inf],
        "c": ["a", "b", None, "zz"],
    })  # fmt: skip
    b = pa.table({
        "id": [4, None, 5, 5], "x": [nan, 1.0, 1.0, 1.0], "y": [1.0, 1.0, None, None],
        "c": ["a", "a", "yy", "zz"],
    })  # fmt: skip
    pq.write_table(a, tmp_path / "a.parquet", row_group_size=2)
    pq.write_table(b, tmp_path / "b.parquet")
    # Parquet's own statistics count nulls only: x has 1 null but 3 missing values.
    stats = pq.ParquetFile(tmp_path / "a.parquet").metadata.row_group(1).column(1).statistics
    assert stats.null_count == 0
    features = [
        FeatureInfo(name="x", type="float64"), FeatureInfo(name="y", type="float64"),
        FeatureInfo(name="c", type="string", categories=["a", "b"]),
    ]  # fmt: skip
    profile = profile_export(
        _export([tmp_path / "a.parquet", tmp_path / "b.parquet"]), ["id"], features,
        LocalObjectStore(root=str(tmp_path)),
    )  # fmt: skip
    assert profile.rows == 8
    assert profile.duplicate_ids == 2 and profile.null_ids == 1  # ids 3 and 5; one null
    assert profile.missing == {"x": 3, "y": 2, "c": 1}
    assert profile.infinite == {"x": 0, "y": 2, "c": 0}
    assert profile.unseen == {"x": 0, "y": 0, "c": 3}  # zz twice, yy once
