"""Temp files of scored shards and exports: never left behind by a killed attempt."""

from pathlib import Path

from upath import UPath

from batch_inference_assets.io.parquet_files import temp_file_for


def test_the_next_attempt_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    target = UPath(str(tmp_path / "scored" / "2026-10-15" / "run-a" / "shard_00001.parquet"))
    other = UPath(str(tmp_path / "scored" / "2026-10-15" / "run-a" / "shard_00002.parquet"))
    killed = temp_file_for(target)  # an attempt SIGKILLed mid-write leaves this
    killed.write_bytes(b"half a parquet file")
    neighbour = temp_file_for(other)  # another shard's attempt, still writing
    retry = temp_file_for(target)
    assert retry.exists() and retry.parent == killed.parent
    assert not killed.exists()  # the same target's leftover is gone
    assert neighbour.exists()  # another target's temp file is not touched
