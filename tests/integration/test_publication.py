"""The warehouse's stage -> gate -> commit or roll back API, on DuckDB and Snowflake (fakesnow)."""

import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_inference_assets.contracts import Column, Contract
from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.io.snowflake_warehouse import SnowflakeWarehouse
from batch_inference_assets.io.warehouse import (
    PublishRequest,
    QueryTag,
    StagedStats,
    Warehouse,
    WarehouseError,
)
from tests.servers import snowflake_warehouse_on

DAY, OTHER_DAY = date(2026, 10, 15), date(2026, 10, 14)
CONTRACT = Contract.of([
    Column("customer_id", "int64", nullable=False),
    Column("score", "float64"),
    Column("partition_date", "date", nullable=False),
])  # fmt: skip


@pytest.fixture
def warehouse(each_warehouse: Warehouse) -> Warehouse:
    return each_warehouse


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(root=str(tmp_path / "store"))


def _files(store: LocalObjectStore, ids: list[int], scores: list[Any], day: date) -> list[str]:
    folder = Path(store.path("scored", uuid.uuid4().hex).path)
    folder.mkdir(parents=True)
    table = pa.table(
        {"customer_id": ids, "score": scores, "partition_date": [day] * len(ids)},
        schema=CONTRACT.arrow_schema(),
    )
    half = len(ids) // 2
    for i, part in enumerate([table.slice(0, half), table.slice(half)]):
        pq.write_table(part, folder / f"shard_{i:05d}.parquet")
    return [str(folder / f"shard_{i:05d}.parquet") for i in range(2)]


def _request(files: list[str], day: date = DAY, mode: str = "replace_partition") -> PublishRequest:
    return PublishRequest(
        table="scores", contract=CONTRACT, partition_column="partition_date",
        partition_value=day, files=files, mode=mode, id_columns=["customer_id"],
        score_column="score", tag=QueryTag("churn", day.isoformat(), "run-1", "predictions"),
    )  # fmt: skip


def _rows(warehouse: Warehouse) -> list[tuple[int, float, date]]:
    table = warehouse.published_table("scores")
    if table is None:
        return []
    rows = warehouse.query(f"SELECT * FROM {table} ORDER BY partition_date, customer_id")
    return [tuple(r.values()) for r in rows.to_pylist()]  # type: ignore[misc]


def _staging_tables(warehouse: Warehouse) -> list[str]:
    if isinstance(warehouse, SnowflakeWarehouse):
        sql = "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_NAME LIKE 'BI_STAGE_%'"
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'stage_%'"
    return [next(iter(r.values())) for r in warehouse.query(sql).to_pylist()]


@pytest.fixture
def published(warehouse: Warehouse, store: LocalObjectStore) -> Iterator[list[Any]]:
    """Two days already published; each test's staging must leave no table behind."""
    for day, ids in ((OTHER_DAY, [1, 2]), (DAY, [1, 2, 3])):
        files = _files(store, ids, [0.5] * len(ids), day)
        with warehouse.stage_publication(_request(files, day), store) as staged:
            staged.commit()
    before = _rows(warehouse)
    assert len(before) == 5
    yield before
    assert _staging_tables(warehouse) == []


def test_commit_replaces_exactly_the_partition(
    warehouse: Warehouse, store: LocalObjectStore, published: list[Any]
) -> None:
    files = _files(store, [7, 8, 9, 10], [0.1, None, 0.9, 0.3], DAY)
    with warehouse.stage_publication(_request(files), store) as staged:
        assert staged.stats == StagedStats(
            rows=4, null_scores=1, min_score=0.1, max_score=0.9, duplicate_ids=0,
            other_partitions=0,
        )  # fmt: skip
        assert _rows(warehouse) == published  # staged rows are invisible until the commit
        staged.commit()
        assert staged.state == "committed"
    rows = _rows(warehouse)
    assert [r[0] for r in rows if r[2] == DAY] == [7, 8, 9, 10]
    assert [r for r in rows if r[2] == OTHER_DAY] == [r for r in published if r[2] == OTHER_DAY]


def test_append_mode_keeps_the_partition(
    warehouse: Warehouse, store: LocalObjectStore, published: list[Any]
) -> None:
    files = _files(store, [4, 5], [0.2, 0.4], DAY)
    with warehouse.stage_publication(_request(files, mode="incremental"), store) as staged:
        staged.commit()
    assert [r[0] for r in _rows(warehouse) if r[2] == DAY] == [1, 2, 3, 4, 5]


def test_rollback_leaves_the_table_and_forbids_a_later_commit(
    warehouse: Warehouse, store: LocalObjectStore, published: list[Any]
) -> None:
    files = _files(store, [1, 1, 2, 3], [0.5, 0.5, 1.5, 0.2], OTHER_DAY)
    with warehouse.stage_publication(_request(files), store) as staged:
        assert (staged.stats.duplicate_ids, staged.stats.other_partitions) == (1, 4)
        assert staged.stats.max_score == 1.5
        staged.rollback()
        assert staged.state == "rolled back"
        with pytest.raises(WarehouseError, match=r"cannot commit .* rolled back"):
            staged.commit()
    assert _rows(warehouse) == published


def test_leaving_the_block_without_a_decision_rolls_back(
    warehouse: Warehouse, store: LocalObjectStore, published: list[Any]
) -> None:
    files = _files(store, [9, 10], [0.1, 0.2], DAY)
    with warehouse.stage_publication(_request(files), store) as staged:
        pass
    assert staged.state == "rolled back"
    with pytest.raises(WarehouseError, match="cannot commit"):
        staged.commit()
    assert _rows(warehouse) == published


def test_an_exception_in_the_block_rolls_back(
    warehouse: Warehouse, store: LocalObjectStore, published: list[Any]
) -> None:
    files = _files(store, [9, 10], [0.1, 0.2], DAY)
    with (
        pytest.raises(RuntimeError, match="gate crashed"),
        warehouse.stage_publication(_request(files), store),
    ):
        raise RuntimeError("gate crashed")
    assert _rows(warehouse) == published


def test_a_missing_file_fails_staging_and_publishes_nothing(
    warehouse: Warehouse, store: LocalObjectStore, published: list[Any]
) -> None:
    files = _files(store, [9, 10], [0.1, 0.2], DAY)
    Path(files[1]).unlink()
    with (
        pytest.raises(WarehouseError, match=r"publishing to .* failed, rolled back"),
        warehouse.stage_publication(_request(files), store),
    ):
        pytest.fail("staging should have failed")
    assert _rows(warehouse) == published


@pytest.mark.parametrize("folder", ["churn/2026-10-15/run-1", "churn/2026-10-15/run-1/predictions"])
def test_snowflake_loads_only_this_publications_files_from_its_stage(
    snowflake_server: dict[str, Any], store: LocalObjectStore, tmp_path: Path, folder: str
) -> None:
    """Files already in the run's stage folder (another table the same run is publishing right
    now, or a killed attempt of this step) are not loaded with this publication's."""
    warehouse = snowflake_warehouse_on(snowflake_server)
    stray = tmp_path / "challenger_00000.parquet"
    Path(_files(store, [100, 101], [0.4, 0.6], DAY)[0]).rename(stray)
    with warehouse.connect() as con:
        cur = con.cursor()
        cur.execute(
            f"CREATE STAGE IF NOT EXISTS {warehouse.output_schema}.{warehouse.publish_stage}"
        )
        cur.execute(
            f"PUT 'file://{stray}' @{warehouse.output_schema}.{warehouse.publish_stage}/{folder}/ "
            "AUTO_COMPRESS = FALSE"
        )
    files = _files(store, [1, 2, 3], [0.1, 0.2, 0.3], DAY)
    with warehouse.stage_publication(_request(files), store) as staged:
        assert staged.stats.rows == 3
        staged.commit()
    assert [row[0] for row in _rows(warehouse)] == [1, 2, 3]
