"""The commands users run: `dagster asset materialize` with the default multiprocess executor."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DAY, SEED_CUSTOMERS, read_table

pytestmark = pytest.mark.slow


def _materialize(
    root: Path, select: str, partition: str, home: Path
) -> subprocess.CompletedProcess[str]:
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "BATCH_INFERENCE_ROOT": str(root), "DAGSTER_HOME": str(home)}
    cmd = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", "dagster_defs.definitions", "--select", select, "--partition", partition,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_cli_materializes_every_asset_with_the_multiprocess_executor(
    root: Path, resources: dict[str, Any], tmp_path: Path
) -> None:
    done = _materialize(root, "key:churn/*", DAY, tmp_path / "home")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Executing steps using multiprocess executor" in log
    assert log.count("Launching subprocess for") >= 7  # every step in its own process
    for stage in ("model", "source_features", "shard_manifest", "predictions", "drift_stats"):
        assert f'Finished execution of step "churn__{stage}"' in log
    assert "churn__scored_shards.churn__score_shard[shard_00000]" in log
    first = read_table(resources)
    assert first.num_rows == SEED_CUSTOMERS

    # Any single asset re-materializes on its own, loading its inputs from storage.
    done = _materialize(root, "key:churn/predictions", DAY, tmp_path / "home")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    again = read_table(resources)
    assert again.num_rows == SEED_CUSTOMERS
    assert again.select(["customer_id", "score"]).equals(first.select(["customer_id", "score"]))
    assert set(again.column("run_id").to_pylist()) == set(first.column("run_id").to_pylist())
