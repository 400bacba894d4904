"""Resources per deployment, under the same role keys: warehouse, object_store, model_store.

Chosen by BATCH_INFERENCE_DEPLOYMENT (local | snowflake_s3) when the code location loads.
Secrets and endpoints are `dg.EnvVar`s, resolved by Dagster when a run starts.
"""

import os
from pathlib import Path
from typing import Any

import dagster as dg

from batch_inference_assets.assets.alerts import Alerter
from batch_inference_assets.assets.common import PREDICTIONS_IO_MANAGER, RECORDS_IO_MANAGER
from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.object_store import LocalObjectStore, ObjectStore, S3ObjectStore
from batch_inference_assets.io.predictions_io_manager import PredictionsIOManager
from batch_inference_assets.io.records_io_manager import RecordIOManagerFactory
from batch_inference_assets.io.snowflake_warehouse import SnowflakeWarehouse
from batch_inference_assets.io.warehouse import Warehouse
from batch_inference_assets.models.store import ModelStore
from batch_inference_assets.progress import CostModel

DEPLOYMENTS = ("local", "snowflake_s3")
DEMO_FEATURE_SCHEMA = "raw"
DEMO_OUTPUT_SCHEMA = "predictions"
# DuckDB's share of a laptop: it spills past this into `<root>/duckdb_tmp`.
LOCAL_DUCKDB_MEMORY_LIMIT = "512MB"
LOCAL_DUCKDB_TEMP_DIR = "duckdb_tmp"


def role_resources(
    warehouse: Warehouse, object_store: ObjectStore, model_store: ModelStore
) -> dict[str, Any]:
    return {
        "warehouse": warehouse,
        "object_store": object_store,
        "model_store": model_store,
        # Our assets pass small typed records; a user's own assets get Dagster's pickling.
        RECORDS_IO_MANAGER: RecordIOManagerFactory(object_store=object_store),
        "io_manager": assets_io_manager(object_store),
        # `<p>/predictions` writes its own table; downstream assets read it as DataFrames.
        PREDICTIONS_IO_MANAGER: PredictionsIOManager(warehouse=warehouse),
        "alerter": alerter(),
        "cost_model": CostModel(),
    }


def assets_io_manager(object_store: ObjectStore) -> Any:
    """The default IO manager, for assets of your own beside the pipelines: dagster-aws's
    S3PickleIOManager on S3, Dagster's FilesystemIOManager locally, under `<store>/assets`."""
    if isinstance(object_store, S3ObjectStore):
        from dagster_aws.s3 import S3PickleIOManager

        return S3PickleIOManager(
            s3_resource=object_store.s3_resource(),
            s3_bucket=object_store.bucket,
            s3_prefix=f"{object_store.prefix.strip('/')}/assets",
        )
    return dg.FilesystemIOManager(base_dir=str(object_store.path("assets")))


def alerter() -> Alerter:
    """Alerts go to BATCH_INFERENCE_ALERT_WEBHOOK_URL when set; they are always logged."""
    options: dict[str, Any] = {
        "webhook_url": _optional("BATCH_INFERENCE_ALERT_WEBHOOK_URL"),
        "ui_base_url": os.environ.get("DAGSTER_UI_URL") or "http://127.0.0.1:3000",
    }
    return Alerter(**{k: v for k, v in options.items() if v is not None})


def local_resources(root: Path) -> dict[str, Any]:
    """The embedded default: a DuckDB file and local folders under `root`."""
    return role_resources(
        DuckDBWarehouse(
            database=str(root / "warehouse.duckdb"),
            schema_name=DEMO_FEATURE_SCHEMA,
            output_schema=DEMO_OUTPUT_SCHEMA,
            memory_limit=LOCAL_DUCKDB_MEMORY_LIMIT,
            temp_directory=str(root / LOCAL_DUCKDB_TEMP_DIR),
        ),
        LocalObjectStore(root=str(root / "object_store")),
        ModelStore(store=LocalObjectStore(root=str(root / "models"))),
    )


def _optional(name: str) -> dg.EnvVar | None:
    """An EnvVar for a setting that may be left unset (checked when definitions load)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def _environment() -> str:
    env = (os.environ.get("BATCH_INFERENCE_ENV") or "dev").upper()
    if env not in ("DEV", "PROD"):
        raise ValueError(f"BATCH_INFERENCE_ENV must be dev or prod, not {env!r}")
    return env


def s3_object_store(prefix_suffix: str = "") -> S3ObjectStore:
    prefix = os.environ.get("BATCH_INFERENCE_S3_PREFIX") or "batch-inference"
    options: dict[str, Any] = {
        "bucket": dg.EnvVar("BATCH_INFERENCE_S3_BUCKET"),
        "prefix": f"{prefix}/{_environment().lower()}{prefix_suffix}",
        # dagster-aws's S3Resource names, from the AWS SDK's own variables.
        "region_name": _optional("AWS_REGION"),
        "endpoint_url": _optional("BATCH_INFERENCE_S3_ENDPOINT_URL"),
        "profile_name": _optional("AWS_PROFILE"),
        "max_attempts": dg.EnvVar.int("AWS_MAX_ATTEMPTS")
        if os.environ.get("AWS_MAX_ATTEMPTS")
        else None,
        "aws_access_key_id": _optional("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": _optional("AWS_SECRET_ACCESS_KEY"),
        "aws_session_token": _optional("AWS_SESSION_TOKEN"),
    }
    return S3ObjectStore(**{k: v for k, v in options.items() if v is not None})


def snowflake_warehouse() -> SnowflakeWarehouse:
    env = _environment()
    options: dict[str, Any] = {
        "account": dg.EnvVar("SNOWFLAKE_ACCOUNT"),
        "user": dg.EnvVar("SNOWFLAKE_USER"),
        # One of: a password, a key pair (PEM file or the PEM itself), or an authenticator.
        "password": _optional("SNOWFLAKE_PASSWORD"),
        "private_key_path": _optional("SNOWFLAKE_PRIVATE_KEY_PATH"),
        "private_key": _optional("SNOWFLAKE_PRIVATE_KEY"),
        "private_key_password": _optional("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"),
        "authenticator": _optional("SNOWFLAKE_AUTHENTICATOR"),
        "role": _optional("SNOWFLAKE_ROLE"),
        "database": dg.EnvVar("SNOWFLAKE_DATABASE"),
        # The {schema} of feature SQL: FEATURES_DEV or FEATURES_PROD unless set explicitly.
        "schema_name": os.environ.get("SNOWFLAKE_FEATURE_SCHEMA") or f"FEATURES_{env}",
        "output_schema": os.environ.get("SNOWFLAKE_OUTPUT_SCHEMA") or f"PREDICTIONS_{env}",
        "export_warehouse": _optional("SNOWFLAKE_EXPORT_WAREHOUSE"),
        "publish_warehouse": _optional("SNOWFLAKE_PUBLISH_WAREHOUSE"),
        "host": _optional("SNOWFLAKE_HOST"),
        "port": dg.EnvVar.int("SNOWFLAKE_PORT") if os.environ.get("SNOWFLAKE_PORT") else None,
        "protocol": os.environ.get("SNOWFLAKE_PROTOCOL") or "https",
        "export_via": os.environ.get("SNOWFLAKE_EXPORT_VIA") or "arrow_batches",
        "unload_stage": _optional("SNOWFLAKE_UNLOAD_STAGE"),
        "publish_via": os.environ.get("SNOWFLAKE_PUBLISH_VIA") or "put",
        "publish_stage": os.environ.get("SNOWFLAKE_PUBLISH_STAGE") or "BATCH_INFERENCE_STAGE",
    }
    return SnowflakeWarehouse(**{k: v for k, v in options.items() if v is not None})


def snowflake_s3_resources() -> dict[str, Any]:
    """Production: Snowflake + S3, every setting from the environment (see the README)."""
    return role_resources(
        snowflake_warehouse(),
        s3_object_store(),
        ModelStore(store=s3_object_store("/models")),
    )


def deployment_resources(root: Path) -> dict[str, Any]:
    name = os.environ.get("BATCH_INFERENCE_DEPLOYMENT") or "local"
    if name == "local":
        return local_resources(root)
    if name == "snowflake_s3":
        return snowflake_s3_resources()
    raise ValueError(f"BATCH_INFERENCE_DEPLOYMENT must be one of {DEPLOYMENTS}, not {name!r}")
