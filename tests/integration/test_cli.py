"""The commands users run: `dagster asset materialize` with the default multiprocess executor."""

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.conftest import DAY, SEED_CUSTOMERS, last_run_steps, materialize_cli, read_table

pytestmark = pytest.mark.slow


def test_cli_materializes_every_asset_with_the_multiprocess_executor(
    root: Path, resources: dict[str, Any], tmp_path: Path
) -> None:
    env = {"BATCH_INFERENCE_ROOT": str(root)}
    done = materialize_cli("key:churn/*", DAY, tmp_path / "home", env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Executing steps using multiprocess executor" in log
    assert log.count("Launching subprocess for") >= 7  # every step in its own process
    _, succeeded = last_run_steps(tmp_path / "home", dg.DagsterEventType.STEP_SUCCESS)
    for stage in ("model", "source_features", "shard_manifest", "predictions", "drift_stats"):
        assert f"churn__{stage}" in succeeded
    assert "churn__scored_shards.churn__score_shard[shard_00000]" in succeeded
    first = read_table(resources)
    assert first.num_rows == SEED_CUSTOMERS

    # Any single asset re-materializes on its own, loading its inputs from storage.
    done = materialize_cli("key:churn/predictions", DAY, tmp_path / "home", env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    again = read_table(resources)
    assert again.num_rows == SEED_CUSTOMERS
    assert again.select(["customer_id", "score"]).equals(first.select(["customer_id", "score"]))
    assert set(again.column("run_id").to_pylist()) == set(first.column("run_id").to_pylist())
