"""Resources per deployment, under the same role keys: warehouse, object_store, model_store."""

from pathlib import Path
from typing import Any

from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.io.records_io_manager import RecordIOManagerFactory
from batch_inference_assets.models.store import ModelStore

DEMO_FEATURE_SCHEMA = "raw"
DEMO_OUTPUT_SCHEMA = "predictions"


def local_resources(root: Path) -> dict[str, Any]:
    """The embedded default: a DuckDB file and local folders under `root`."""
    object_store = LocalObjectStore(root=str(root / "object_store"))
    return {
        "warehouse": DuckDBWarehouse(
            database=str(root / "warehouse.duckdb"),
            schema_name=DEMO_FEATURE_SCHEMA,
            output_schema=DEMO_OUTPUT_SCHEMA,
        ),
        "object_store": object_store,
        "model_store": ModelStore(store=LocalObjectStore(root=str(root / "models"))),
        "io_manager": RecordIOManagerFactory(object_store=object_store),
    }
