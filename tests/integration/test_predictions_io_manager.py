"""A user's asset downstream of `<p>/predictions` receives the partition's rows as a DataFrame,
read from the published table by the predictions IO manager: on DuckDB and Snowflake (fakesnow)."""

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_inference_assets.contracts import Column, Contract
from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.object_store import LocalObjectStore, ObjectStore
from batch_inference_assets.io.warehouse import PublishRequest, QueryTag, Warehouse
from batch_inference_assets.models.store import ModelStore
from batch_inference_assets.records import PublishedPartition
from dagster_defs.deployments import role_resources

DAYS = ("2026-10-14", "2026-10-15")
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-10-01")
TABLE = "churn_predictions"
CONTRACT = Contract.of([
    Column("customer_id", "int64", nullable=False),
    Column("score", "float64"),
    Column("label", "string"),
    Column("scored_at", "timestamp", nullable=False),
    Column("partition_date", "date", nullable=False),
])  # fmt: skip
DTYPES = {
    "customer_id": "int64", "score": "float64", "label": "object",
    "scored_at": "datetime64[ns, UTC]", "partition_date": "datetime64[ns]",
}  # fmt: skip


def _scored(day: str) -> pa.Table:
    """A day's scored rows; each day scores different customers, some without a score."""
    n, first = (3, 100) if day == DAYS[0] else (5, 200)
    return pa.table(
        {
            "customer_id": [first + i for i in range(n)],
            "score": [None if i == 1 else i / 10 for i in range(n)],
            "label": [None if i == 1 else f"l{i}" for i in range(n)],
            "scored_at": [datetime(2026, 10, 16, 2, i, tzinfo=UTC) for i in range(n)],
            "partition_date": [date.fromisoformat(day)] * n,
        },
        schema=CONTRACT.arrow_schema(),
    )


def _expected(*days: str) -> pd.DataFrame:
    frame = pa.concat_tables([_scored(d) for d in days]).to_pandas()
    return frame.astype(DTYPES).astype({"label": object})


def _assets(received: dict[str, pd.DataFrame]) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=["churn", "predictions"],
        partitions_def=PARTITIONS,
        metadata={"dagster/table_name": TABLE},
        io_manager_key="predictions_io_manager",
    )
    def predictions(
        context: dg.AssetExecutionContext, warehouse: Warehouse, object_store: ObjectStore
    ) -> PublishedPartition:
        """Stands in for the pipeline's asset: publishes the day's rows through the API."""
        folder = object_store.path("churn", "scored", context.partition_key)
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(_scored(context.partition_key), (folder / "shard_00000.parquet").path)
        day = date.fromisoformat(context.partition_key)
        request = PublishRequest(
            table=TABLE, contract=CONTRACT, partition_column="partition_date",
            partition_value=day, files=[str(folder / "shard_00000.parquet")],
            mode="replace_partition", id_columns=["customer_id"], score_column="score",
            tag=QueryTag("churn", context.partition_key, context.run_id, "predictions"),
        )  # fmt: skip
        with warehouse.stage_publication(request, object_store) as staged:
            staged.commit()
        return PublishedPartition(
            pipeline="churn", partition=context.partition_key, table=TABLE,
            rows=staged.stats.rows, mode="replace_partition",
        )  # fmt: skip

    @dg.asset(
        key=["reports", "churn_day"],
        partitions_def=PARTITIONS,
        ins={"predictions": dg.AssetIn(["churn", "predictions"])},
    )
    def churn_day(predictions: pd.DataFrame) -> dg.MaterializeResult:
        received["day"] = predictions
        return dg.MaterializeResult(metadata={"rows": len(predictions)})

    @dg.asset(
        key=["reports", "churn_two_days"],
        partitions_def=PARTITIONS,
        ins={
            "predictions": dg.AssetIn(
                ["churn", "predictions"],
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1),
            )
        },
    )
    def churn_two_days(predictions: pd.DataFrame) -> dg.MaterializeResult:
        received["two_days"] = predictions
        return dg.MaterializeResult(metadata={"rows": len(predictions)})

    return [predictions, churn_day, churn_two_days]


@pytest.fixture
def warehouse(each_warehouse: Warehouse) -> Warehouse:
    return each_warehouse


@pytest.fixture
def resources(warehouse: Warehouse, tmp_path: Path) -> dict[str, Any]:
    """The deployment's roles, predictions_io_manager included, over `warehouse`."""
    store = LocalObjectStore(root=str(tmp_path / "store"))
    return role_resources(warehouse, store, ModelStore(store=store))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["partition_date", "customer_id"], ignore_index=True)


def test_downstream_assets_receive_the_published_rows_as_frames(
    resources: dict[str, Any],
) -> None:
    received: dict[str, pd.DataFrame] = {}
    assets = _assets(received)
    first = dg.materialize(
        assets, selection="key:churn/predictions", partition_key=DAYS[0], resources=resources
    )
    assert first.success
    second = dg.materialize(assets, partition_key=DAYS[1], resources=resources)
    assert second.success

    day = received["day"]
    assert day.dtypes.astype(str).to_dict() == DTYPES
    pd.testing.assert_frame_equal(_sorted(day), _expected(DAYS[1]))
    # A partition mapping over two days: both partitions' rows, concatenated.
    pd.testing.assert_frame_equal(_sorted(received["two_days"]), _expected(*DAYS))
    # Storing the predictions' output wrote nothing: the table holds what was published.
    assert len(resources["warehouse"].query(f"SELECT * FROM {_table(resources)}")) == 8


def _table(resources: dict[str, Any]) -> str:
    table = resources["warehouse"].published_table(TABLE)
    assert table is not None
    return table


def test_an_unpublished_partition_reads_as_an_empty_frame_with_the_declared_types(
    resources: dict[str, Any],
) -> None:
    received: dict[str, pd.DataFrame] = {}
    assets = _assets(received)
    assert dg.materialize(
        assets, selection="key:churn/predictions", partition_key=DAYS[1], resources=resources
    ).success
    empty = resources["warehouse"].read_partition(TABLE, "partition_date", date(2026, 10, 3))
    assert empty.empty and empty.dtypes.astype(str).to_dict() == DTYPES


def test_the_io_manager_takes_only_a_publication_record(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    store = LocalObjectStore(root=str(tmp_path / "store"))

    @dg.asset(
        key=["churn", "predictions"],
        partitions_def=PARTITIONS,
        metadata={"dagster/table_name": TABLE},
        io_manager_key="predictions_io_manager",
    )
    def predictions() -> dict[str, int]:
        return {"rows": 1}

    result = dg.materialize(
        [predictions],
        partition_key=DAYS[0],
        resources=role_resources(warehouse, store, ModelStore(store=store)),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert error is not None
    assert "takes the PublishedPartition record of a publication, not dict" in error.to_string()
