from pathlib import Path

import dagster as dg
import pytest
from dagster_aws.s3 import S3PickleIOManager

from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.object_store import S3ObjectStore
from batch_inference_assets.io.snowflake_warehouse import SnowflakeWarehouse
from dagster_defs.deployments import deployment_resources


def test_local_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BATCH_INFERENCE_DEPLOYMENT", raising=False)
    resources = deployment_resources(tmp_path)
    assert isinstance(resources["warehouse"], DuckDBWarehouse)
    assert set(resources) == {
        "warehouse", "object_store", "model_store", "io_manager", "records_io_manager",
        "predictions_io_manager", "alerter", "cost_model",
    }  # fmt: skip
    assert isinstance(resources["io_manager"], dg.FilesystemIOManager)


def test_snowflake_s3_takes_secrets_as_env_vars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BATCH_INFERENCE_DEPLOYMENT", "snowflake_s3")
    monkeypatch.setenv("BATCH_INFERENCE_ENV", "prod")
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-TEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
    monkeypatch.delenv("SNOWFLAKE_FEATURE_SCHEMA", raising=False)
    monkeypatch.delenv("SNOWFLAKE_HOST", raising=False)
    resources = deployment_resources(tmp_path)
    warehouse, store = resources["warehouse"], resources["object_store"]
    assert isinstance(warehouse, SnowflakeWarehouse) and isinstance(store, S3ObjectStore)
    # Secrets stay EnvVar references, resolved when a run starts, never copied at load.
    assert isinstance(warehouse._get_non_default_public_field_values()["password"], dg.EnvVar)
    assert (
        warehouse.schema_name == "FEATURES_PROD" and warehouse.output_schema == "PREDICTIONS_PROD"
    )
    assert store.prefix == "batch-inference/prod"
    # A user's own assets pickle to the same bucket with dagster-aws, under the same settings.
    io_manager = resources["io_manager"]
    assert isinstance(io_manager, S3PickleIOManager)
    assert io_manager.s3_prefix == "batch-inference/prod/assets"
    s3 = io_manager.s3_resource._get_non_default_public_field_values()
    assert isinstance(s3["aws_secret_access_key"], dg.EnvVar)
    assert s3["aws_secret_access_key"].env_var_name == "AWS_SECRET_ACCESS_KEY"


def test_snowflake_key_pair_and_authenticator_from_env_vars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BATCH_INFERENCE_DEPLOYMENT", "snowflake_s3")
    monkeypatch.delenv("SNOWFLAKE_PASSWORD", raising=False)
    monkeypatch.delenv("SNOWFLAKE_PRIVATE_KEY_PATH", raising=False)
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY", "-----BEGIN ENCRYPTED PRIVATE KEY-----")
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE", "k")
    monkeypatch.setenv("SNOWFLAKE_AUTHENTICATOR", "snowflake_jwt")
    warehouse = deployment_resources(tmp_path)["warehouse"]
    fields = warehouse._get_non_default_public_field_values()
    assert all(isinstance(fields[k], dg.EnvVar) for k in ("private_key", "private_key_password"))
    assert fields["private_key"] == dg.EnvVar("SNOWFLAKE_PRIVATE_KEY")
    assert fields["private_key_password"] == dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PASSPHRASE")
    assert fields["authenticator"] == dg.EnvVar("SNOWFLAKE_AUTHENTICATOR")
    assert "password" not in fields and "private_key_path" not in fields


def test_s3_settings_carry_dagster_aws_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BATCH_INFERENCE_DEPLOYMENT", "snowflake_s3")
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "secret")
    env = {
        "AWS_REGION": "region_name", "AWS_PROFILE": "profile_name",
        "AWS_ACCESS_KEY_ID": "aws_access_key_id", "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
        "AWS_SESSION_TOKEN": "aws_session_token", "AWS_MAX_ATTEMPTS": "max_attempts",
        "BATCH_INFERENCE_S3_ENDPOINT_URL": "endpoint_url",
    }  # fmt: skip
    for var in env:
        monkeypatch.setenv(var, "7")
    store = deployment_resources(tmp_path)["object_store"]
    fields = store._get_non_default_public_field_values()
    for var, field in env.items():
        # An EnvVar (IntEnvVar for max_attempts), resolved when a run starts.
        assert getattr(fields[field], "env_var_name", None) == var


def test_unknown_deployment_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BATCH_INFERENCE_DEPLOYMENT", "bigquery")
    with pytest.raises(ValueError, match="must be one of"):
        deployment_resources(tmp_path)
