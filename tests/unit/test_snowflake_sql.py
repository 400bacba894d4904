"""Production Snowflake statements that fakesnow cannot run, checked at the SQL level."""

import json
from decimal import Decimal

import pyarrow as pa
import pytest
from dagster_snowflake import SnowflakeResource

from batch_inference_assets.io.object_store import S3ObjectStore
from batch_inference_assets.io.snowflake_warehouse import (
    SnowflakeWarehouse,
    copy_into_sql,
    normalize_batch,
    stage_path,
    unload_sql,
)
from batch_inference_assets.io.warehouse import QueryTag, WarehouseError

QID = "01b2c3d4-0000-1111-2222-333344445555"


def test_unload_reads_the_bound_query_result_and_lowercases_columns() -> None:
    sql = unload_sql("OPS.BI_UNLOAD", "churn/features/2026-10-15", QID,
                     ["CUSTOMER_ID", "TENURE", "mixedCase"], 128 * 2**20)  # fmt: skip
    assert sql == (
        "COPY INTO @OPS.BI_UNLOAD/churn/features/2026-10-15/part FROM (SELECT "
        '"CUSTOMER_ID" AS "customer_id", "TENURE" AS "tenure", "mixedCase" AS "mixedCase" '
        f"FROM TABLE(RESULT_SCAN('{QID}'))) FILE_FORMAT = (TYPE = PARQUET) HEADER = TRUE "
        "MAX_FILE_SIZE = 134217728 OVERWRITE = TRUE"
    )


@pytest.mark.parametrize("qid", ["x'); DROP TABLE t; --", "", "01b2c3d4"])
def test_unload_refuses_anything_but_a_query_id(qid: str) -> None:
    with pytest.raises(WarehouseError, match="query id"):
        unload_sql("S", "p", qid, ["A"], 1)


def test_copy_from_an_external_stage_names_the_files() -> None:
    sql = copy_into_sql("P.STAGE_1", "OPS.BI_EXT", "churn/scored/2026-10-15",
                        ["shard_00000.parquet", "shard_00001.parquet"])  # fmt: skip
    assert sql == (
        "COPY INTO P.STAGE_1 FROM @OPS.BI_EXT/churn/scored/2026-10-15/ FILES = "
        "('shard_00000.parquet', 'shard_00001.parquet') FILE_FORMAT = (TYPE = PARQUET) "
        "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE"
    )


@pytest.mark.parametrize("bad", ["a b", "x'y", "a;b", "p/$(x)"])
def test_stage_paths_are_restricted(bad: str) -> None:
    with pytest.raises(WarehouseError, match="refusing stage path"):
        stage_path("churn", bad)


def test_normalize_batch_folds_names_and_numbers() -> None:
    t = pa.table({
        "CUSTOMER_ID": pa.array([Decimal(1)], pa.decimal128(38, 0)),
        "CHARGES": pa.array([Decimal("1.50")], pa.decimal128(10, 2)),
        "quoted_Name": pa.array(["x"]),
    })  # fmt: skip
    out = normalize_batch(t)
    assert out.schema == pa.schema(
        [("customer_id", pa.int64()), ("charges", pa.float64()), ("quoted_Name", pa.string())]
    )
    assert out.to_pylist() == [{"customer_id": 1, "charges": 1.5, "quoted_Name": "x"}]


def _warehouse(**kw: object) -> SnowflakeWarehouse:
    base = {"account": "acme-xy123", "user": "BI_SVC", "database": "ML",
            "schema_name": "FEATURES_PROD", "output_schema": "PREDICTIONS_PROD"}  # fmt: skip
    return SnowflakeWarehouse(**{**base, **kw})  # type: ignore[arg-type]


def test_every_connection_carries_the_query_tag_and_binds_server_side() -> None:
    tag = QueryTag("churn", "2026-10-15", "run-1", "predictions")
    resource = _warehouse(password="pw", role="BI_ROLE").snowflake_resource(tag)
    assert isinstance(resource, SnowflakeResource)
    assert (resource.paramstyle, resource.role, resource.password) == ("qmark", "BI_ROLE", "pw")
    extra = resource.additional_snowflake_connection_args or {}
    assert json.loads(extra["session_parameters"]["QUERY_TAG"]) == {
        "app": "batch-inference", "pipeline": "churn", "partition": "2026-10-15",
        "run_id": "run-1", "stage": "predictions",
    }  # fmt: skip
    assert "host" not in extra and "port" not in extra


def test_key_pair_and_authenticator_pass_through_to_dagster_snowflake() -> None:
    by_path = _warehouse(private_key_path="/keys/bi.p8", private_key_password="k")
    resource = by_path.snowflake_resource()
    assert (resource.private_key_path, resource.private_key_password) == ("/keys/bi.p8", "k")
    assert resource.password is None and resource.private_key is None
    extra = resource.additional_snowflake_connection_args or {}
    assert "QUERY_TAG" not in extra["session_parameters"]
    assert _warehouse(private_key="-----BEGIN PRIVATE KEY-----").snowflake_resource().private_key
    sso = _warehouse(authenticator="externalbrowser").snowflake_resource()
    assert sso.authenticator == "externalbrowser" and sso.password is None


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"password": "pw", "private_key_path": "/keys/bi.p8"},
        {"password": "pw", "private_key": "k"},
    ],
)
def test_exactly_one_way_to_authenticate(auth: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"set exactly one of warehouse\.password, private_key"):
        _warehouse(**auth)


def test_bare_stage_names_live_in_the_output_schema() -> None:
    w = _warehouse(password="pw")
    assert w._qualified("BI_STAGE", "stage") == "PREDICTIONS_PROD.BI_STAGE"
    assert w._qualified("OPS.BI_STAGE", "stage") == "OPS.BI_STAGE"


def test_s3_paths_relative_to_the_stage_root() -> None:
    store = S3ObjectStore(bucket="ml-bi", prefix="batch-inference/prod", endpoint_url="http://x")
    assert str(store.base) == "s3://ml-bi/batch-inference/prod"
    assert store.storage_options == {
        "endpoint_url": "http://x",
        "config_kwargs": {
            "retries": {"max_attempts": 5, "mode": "standard"},
            "connect_timeout": 10.0,
            "read_timeout": 60.0,
        },
    }
    uri = "s3://ml-bi/batch-inference/prod/churn/scored/2026-10-15/shard_00000.parquet"
    assert store.relative(uri) == "churn/scored/2026-10-15/shard_00000.parquet"
