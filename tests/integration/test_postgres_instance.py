"""Dagster's own storage on PostgreSQL, with the production dagster.yaml exactly as shipped."""

from pathlib import Path
from typing import Any

import psycopg2
import pytest
import s3fs

from tests.conftest import DAY, SEED_CUSTOMERS, materialize_cli, read_table
from tests.servers import S3_KEY, S3_SECRET

pytestmark = pytest.mark.slow


def test_a_run_on_the_production_instance_lands_in_postgres(
    production_instance: tuple[Path, dict[str, str]],
    root: Path,
    resources: dict[str, Any],
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    home, env = production_instance
    done = materialize_cli("group:churn", DAY, home, {**env, "BATCH_INFERENCE_ROOT": str(root)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not list(home.glob("**/*.db")), "nothing may fall back to SQLite"

    with psycopg2.connect(
        host=env["DAGSTER_PG_HOST"], port=int(env["DAGSTER_PG_PORT"]),
        dbname=env["DAGSTER_PG_DB"], user=env["DAGSTER_PG_USERNAME"],
    ) as conn, conn.cursor() as cur:  # fmt: skip
        cur.execute("SELECT run_id, status FROM runs")
        runs = cur.fetchall()
        assert [status for _, status in runs] == ["SUCCESS"]
        cur.execute(
            "SELECT step_key FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (runs[0][0], "STEP_SUCCESS"),
        )
        steps = {r[0] for r in cur.fetchall()}
        cur.execute(
            "SELECT COUNT(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
            "AND partition = %s",
            (DAY,),
        )
        materializations = cur.fetchone()[0]  # type: ignore[index]
    assert "churn__predictions" in steps
    assert any("score_shard[" in s for s in steps)
    assert materializations >= 5  # model, features, manifest, shards, predictions, drift

    # Step logs from every process went to S3 (S3ComputeLogManager), here the moto server.
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key=S3_KEY, secret=S3_SECRET)
    assert fs.find(f"{s3_bucket}/dagster-compute-logs"), "step logs were not uploaded to S3"
    assert read_table(resources).num_rows == SEED_CUSTOMERS
