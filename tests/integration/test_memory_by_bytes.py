"""Memory by bytes on the real stack: DuckDB's memory limit and spill folder on every connection
the warehouse opens, and a row too wide for a scoring batch failing its run by name."""

from pathlib import Path
from typing import Any

import duckdb
import pytest

from batch_inference_assets import PipelineSpec
from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.warehouse import WarehouseError
from dagster_defs import deployments
from tests.conftest import DAY, Materialize, failure_message

MIB = 2**20
SETTINGS = (
    "SELECT current_setting('memory_limit') AS memory_limit, "
    "current_setting('temp_directory') AS temp_directory"
)


def _duckdb_reads(memory_limit: str) -> str:
    """A memory limit as DuckDB reports it back (512MB reads as 488.2 MiB)."""
    with duckdb.connect(config={"memory_limit": memory_limit}) as con:
        row = con.execute("SELECT current_setting('memory_limit')").fetchone()
    assert row is not None
    return str(row[0])


def _settings(warehouse: DuckDBWarehouse) -> dict[str, str]:
    row = warehouse.query(SETTINGS).to_pylist()[0]
    with warehouse.connect() as con:  # the connection publish and export open, too
        assert con.execute(SETTINGS).fetchone() == (row["memory_limit"], row["temp_directory"])
    return row


def test_connections_carry_the_configured_memory_limit_and_temp_directory(
    tmp_path: Path,
) -> None:
    spill = tmp_path / "spill" / "duckdb"
    warehouse = DuckDBWarehouse(
        database=str(tmp_path / "w.duckdb"), memory_limit="300MiB", temp_directory=str(spill)
    )
    assert _settings(warehouse) == {"memory_limit": "300.0 MiB", "temp_directory": str(spill)}


def test_the_local_deployment_spills_under_its_data_root(
    root: Path, resources: dict[str, Any]
) -> None:
    warehouse = resources["warehouse"]
    assert _settings(warehouse) == {
        "memory_limit": _duckdb_reads(deployments.LOCAL_DUCKDB_MEMORY_LIMIT),
        "temp_directory": str(root / "duckdb_tmp"),
    }


def test_duckdb_spills_into_a_temp_directory_whose_folder_did_not_exist(tmp_path: Path) -> None:
    spill = tmp_path / "not" / "yet" / "duckdb_tmp"
    warehouse = DuckDBWarehouse(
        database=str(tmp_path / "w.duckdb"), memory_limit="64MiB", temp_directory=str(spill)
    )
    with warehouse.connect() as con:
        con.execute("SET enable_progress_bar = false")
        # Sorting ~50 MB of strings under a 64 MiB limit spills; DuckDB makes only the last folder.
        row = con.execute(
            "SELECT s FROM (SELECT md5(range::VARCHAR) AS s FROM range(1000000)) "
            "ORDER BY s LIMIT 1 OFFSET 500000"
        ).fetchone()
        assert row is not None and len(row[0]) == 32
        assert spill.is_dir()
    assert not spill.exists()  # DuckDB removes what it made when the connection closes


def test_a_memory_limit_duckdb_cannot_read_fails_naming_it(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"), memory_limit="lots")
    with pytest.raises(WarehouseError, match="memory_limit 'lots'"):
        warehouse.query("SELECT 1")


WIDE_CUSTOMER = 100001


def _with_a_wide_id(spec: PipelineSpec, batch_bytes: int) -> PipelineSpec:
    """The churn pipeline with a second id column, `note`: 2 MiB of text for one customer."""
    raw = spec.model_dump(mode="json")
    old = "    customer_id,\n"
    assert old in raw["features"]["sql"]
    wide = f"CASE WHEN customer_id = {WIDE_CUSTOMER} THEN repeat('x', {2 * MIB}) ELSE '' END"
    raw["features"]["sql"] = raw["features"]["sql"].replace(old, f"{old}    {wide} AS note,\n", 1)
    raw["features"]["id_columns"] = ["customer_id", "note"]
    raw["output"]["columns"].append({"name": "note", "type": "string"})
    raw["sharding"]["batch_bytes"] = batch_bytes
    return PipelineSpec.model_validate(raw)


def test_a_row_wider_than_batch_bytes_fails_naming_pipeline_partition_shard_and_size(
    materialize: Materialize, churn_spec: PipelineSpec
) -> None:
    spec = _with_a_wide_id(churn_spec, batch_bytes=MIB)  # the YAML's bound reaches the steps
    result = materialize(DAY, spec)
    assert not result.success
    message = failure_message(result)
    assert f"pipeline 'churn', partition {DAY}, scoring shard_" in message, message
    assert "RowTooWide" in message and "bytes in memory" in message, message
    size = int(message.split(" bytes in memory")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert 2 * MIB < size < 2 * MIB + 4_096, message
    assert f"raise sharding.batch_bytes above {size:,}" in message, message
