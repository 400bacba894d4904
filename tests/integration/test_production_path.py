"""The production path over real protocols: S3 through moto, Snowflake through fakesnow."""

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
import s3fs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from snowflake.connector.errors import ProgrammingError

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.io.duckdb_warehouse import DuckDBWarehouse
from batch_inference_assets.io.object_store import ObjectStoreError, S3ObjectStore
from batch_inference_assets.io.snowflake_warehouse import SnowflakeWarehouse
from batch_inference_assets.io.warehouse import WarehouseError
from batch_inference_assets.models.store import ModelStore
from dagster_defs.deployments import DEMO_FEATURE_SCHEMA, DEMO_OUTPUT_SCHEMA, role_resources
from tests.conftest import (
    DAY,
    OTHER_DAYS,
    OUTPUT_COLUMNS,
    SEED_CUSTOMERS,
    failure_message,
    materialize_cli,
    read_downstream,
)
from tests.servers import (
    S3_KEY,
    S3_SECRET,
    load_into_snowflake,
    moto_s3_with_auth,
    s3_internal_errors,
    seeded_features,
    silent_peer,
    snowflake_login_refused,
)

STABLE = ["customer_id", "score", "label", "model_version", "partition_date"]


def _s3(bucket: str, endpoint: str, prefix: str = "bi") -> S3ObjectStore:
    return S3ObjectStore(
        bucket=bucket, prefix=prefix, endpoint_url=endpoint,
        aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET, region_name="us-east-1",
    )  # fmt: skip


def _models_on_s3(root: Path, bucket: str, endpoint: str) -> ModelStore:
    """The seeded champion model, uploaded to the S3 model store."""
    store = _s3(bucket, endpoint, "models")
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key=S3_KEY, secret=S3_SECRET)
    fs.put(str(root / "models") + "/", f"{bucket}/models/", recursive=True)
    return ModelStore(store=store)


def _run(
    spec: PipelineSpec, resources: dict[str, Any], day: str = DAY
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        build_pipeline(spec).assets, partition_key=day, resources=resources, raise_on_error=False
    )


def test_graph_on_duckdb_with_s3_object_and_model_store(
    root: Path, churn_spec: PipelineSpec, s3_bucket: str, s3_endpoint: str
) -> None:
    object_store = _s3(s3_bucket, s3_endpoint)
    warehouse = DuckDBWarehouse(
        database=str(root / "warehouse.duckdb"),
        schema_name=DEMO_FEATURE_SCHEMA, output_schema=DEMO_OUTPUT_SCHEMA,
    )  # fmt: skip
    resources = role_resources(warehouse, object_store, _models_on_s3(root, s3_bucket, s3_endpoint))
    result = _run(churn_spec, resources)
    assert result.success, failure_message(result)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key=S3_KEY, secret=S3_SECRET)
    assert fs.ls(f"{s3_bucket}/bi/churn/features/{DAY}")  # the export went to S3
    scored = fs.glob(f"{s3_bucket}/bi/churn/scored/{DAY}/{result.run_id}/shard_*.parquet")
    assert len(scored) == len(result.output_for_node("churn__shard_manifest").shards) >= 2
    # the challenger's beside them, one per shard
    assert len(fs.glob(f"{s3_bucket}/bi/churn/scored/{DAY}/{result.run_id}/challengers/*/*")) == (
        len(scored)
    )
    assert fs.exists(f"{s3_bucket}/bi/records/churn/scored_shards/{DAY}.json")
    # The published table is the predictions' only copy: their IO manager stores nothing.
    assert not fs.exists(f"{s3_bucket}/bi/records/churn/predictions/{DAY}.json")
    rows = warehouse.query(
        f"SELECT COUNT(*) AS n FROM {DEMO_OUTPUT_SCHEMA}.churn_predictions "
        "WHERE partition_date = ?",
        [DAY],
    )
    assert rows.column("n")[0].as_py() == SEED_CUSTOMERS


@pytest.fixture
def snowflake(snowflake_server: dict[str, Any], root: Path) -> SnowflakeWarehouse:
    """A fresh fakesnow database holding the seeded features of three days."""
    database = f"BI_{uuid.uuid4().hex[:8].upper()}"
    kwargs = {k: v for k, v in snowflake_server.items() if k != "network_timeout"}
    load_into_snowflake(
        kwargs, database, "FEATURES_DEV.CUSTOMER_FEATURES",
        seeded_features(root / "warehouse.duckdb", [*OTHER_DAYS, DAY]),
    )  # fmt: skip
    load_into_snowflake(  # the late labels churn's realized_performance reads
        kwargs, database, "FEATURES_DEV.CHURN_OUTCOMES",
        seeded_features(root / "warehouse.duckdb", [*OTHER_DAYS, DAY], "churn_outcomes"),
    )  # fmt: skip
    warehouse = SnowflakeWarehouse(
        account=kwargs["account"], user=kwargs["user"], password=kwargs["password"],
        host=kwargs["host"], port=kwargs["port"], protocol=kwargs["protocol"],
        database=database, schema_name="FEATURES_DEV", output_schema="PREDICTIONS_DEV",
        export_warehouse="EXPORT_WH", publish_warehouse="PUBLISH_WH",
    )  # fmt: skip
    with warehouse.connect() as con:  # an admin creates the output schema once
        con.cursor().execute("CREATE SCHEMA IF NOT EXISTS PREDICTIONS_DEV")
    return warehouse


@pytest.fixture
def production(
    root: Path, snowflake: SnowflakeWarehouse, s3_bucket: str, s3_endpoint: str
) -> dict[str, Any]:
    """The production roles: Snowflake (fakesnow) and S3 (moto) for data and models."""
    return role_resources(
        snowflake, _s3(s3_bucket, s3_endpoint), _models_on_s3(root, s3_bucket, s3_endpoint)
    )


def _predictions(warehouse: SnowflakeWarehouse, day: str | None = None) -> pa.Table:
    where, params = ("WHERE partition_date = ?", [day]) if day else ("", [])
    return warehouse.query(
        f"SELECT * FROM PREDICTIONS_DEV.CHURN_PREDICTIONS {where} "
        "ORDER BY partition_date, customer_id",
        params,
    )


def test_graph_on_snowflake_and_s3(
    churn_spec: PipelineSpec,
    snowflake: SnowflakeWarehouse,
    production: dict[str, Any],
) -> None:
    resources = production
    for day in (OTHER_DAYS[1], DAY):
        result = _run(churn_spec, resources, day)
        assert result.success, failure_message(result)
    table = _predictions(snowflake)
    assert table.column_names == OUTPUT_COLUMNS
    assert table.num_rows == 2 * SEED_CUSTOMERS

    # Row parity with the source, and the same scores as the embedded default would give.
    source = snowflake.query(
        "SELECT customer_id FROM FEATURES_DEV.CUSTOMER_FEATURES WHERE snapshot_date = ? ORDER BY 1",
        [DAY],
    )
    first = _predictions(snowflake, DAY)
    assert first.column("customer_id").to_pylist() == source.column("customer_id").to_pylist()

    # A user's asset downstream of the predictions reads that day's rows from Snowflake.
    read = read_downstream(churn_spec, resources, DAY)
    assert sorted(read["customer_id"]) == first.column("customer_id").to_pylist()
    assert read["model_version"].unique().tolist() == list(set(first["model_version"].to_pylist()))
    # Its own output went to S3 through dagster-aws's pickling IO manager, beside our files.
    stored = resources["object_store"].path("assets", "retention_offers", DAY)
    assert stored.exists() and stored.stat().st_size > 0

    # Idempotent: re-running a day replaces exactly that day.
    other_before = _predictions(snowflake, OTHER_DAYS[1])
    rerun = _run(churn_spec, resources, DAY)
    assert rerun.success, failure_message(rerun)
    again = _predictions(snowflake, DAY)
    assert again.select(STABLE).equals(first.select(STABLE))
    assert set(again.column("run_id").to_pylist()) == {rerun.run_id}
    assert _predictions(snowflake, OTHER_DAYS[1]).equals(other_before)


def test_snowflake_gate_failure_publishes_nothing(
    root: Path,
    churn_spec: PipelineSpec,
    snowflake: SnowflakeWarehouse,
    production: dict[str, Any],
) -> None:
    resources = production
    assert _run(churn_spec, resources).success
    before = _predictions(snowflake)
    # Duplicate a customer in the source: the blocking check stops the run before publication.
    load_into_snowflake(
        _kwargs(snowflake),
        snowflake.database, "FEATURES_DEV.CUSTOMER_FEATURES",
        pa.concat_tables([seeded_features(root / "warehouse.duckdb", [DAY])] * 2),
    )  # fmt: skip
    result = _run(churn_spec, resources)
    assert not result.success
    assert "ids_are_unique failed" in failure_message(result)
    assert _predictions(snowflake).equals(before)


def _rebuilt(w: SnowflakeWarehouse, **changes: Any) -> SnowflakeWarehouse:
    """A new resource (Dagster configures runs from constructor values, not model_copy)."""
    return SnowflakeWarehouse(**{**w.model_dump(), **changes})


def _kwargs(w: SnowflakeWarehouse) -> dict[str, Any]:
    return {
        "account": w.account, "user": w.user, "password": w.password,
        "host": w.host, "port": w.port, "protocol": w.protocol,
    }  # fmt: skip


def test_wrong_snowflake_port_fails_fast_naming_the_settings(snowflake: SnowflakeWarehouse) -> None:
    broken = _rebuilt(snowflake, port=9, login_timeout_seconds=5)
    started = time.monotonic()
    with pytest.raises(WarehouseError) as err:
        broken.query("SELECT 1")
    assert time.monotonic() - started < 30
    message = str(err.value)
    assert "cannot connect to Snowflake" in message and "127.0.0.1:9" in message
    assert "host and port" in message


def test_missing_bucket_fails_before_anything_runs(
    root: Path, churn_spec: PipelineSpec, s3_endpoint: str, s3_bucket: str
) -> None:
    warehouse = DuckDBWarehouse(
        database=str(root / "warehouse.duckdb"),
        schema_name=DEMO_FEATURE_SCHEMA, output_schema=DEMO_OUTPUT_SCHEMA,
    )  # fmt: skip
    resources = role_resources(
        warehouse, _s3("no-such-bucket", s3_endpoint), _models_on_s3(root, s3_bucket, s3_endpoint)
    )
    result = _run(churn_spec, resources)
    assert not result.success
    init_failures = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert init_failures, "the bucket is checked when resources start, before any step runs"
    error = init_failures[0].event_specific_data.error.to_string()
    assert "S3 bucket 'no-such-bucket' does not exist" in error and "object_store.bucket" in error
    assert not any(e.is_step_success for e in result.all_events)


@pytest.mark.slow
def test_cli_on_snowflake_and_s3_with_the_multiprocess_executor(
    root: Path, snowflake: SnowflakeWarehouse, s3_bucket: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """The snowflake_s3 deployment, configured only through environment variables."""
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key=S3_KEY, secret=S3_SECRET)
    fs.put(str(root / "models") + "/", f"{s3_bucket}/batch-inference/dev/models/", recursive=True)
    env = {
        "BATCH_INFERENCE_DEPLOYMENT": "snowflake_s3",
        "BATCH_INFERENCE_ENV": "dev",
        "SNOWFLAKE_ACCOUNT": snowflake.account,
        "SNOWFLAKE_USER": snowflake.user,
        "SNOWFLAKE_PASSWORD": snowflake.password or "",
        "SNOWFLAKE_DATABASE": snowflake.database,
        "SNOWFLAKE_HOST": snowflake.host or "",
        "SNOWFLAKE_PORT": str(snowflake.port),
        "SNOWFLAKE_PROTOCOL": snowflake.protocol,
        "SNOWFLAKE_EXPORT_WAREHOUSE": "EXPORT_WH",
        "SNOWFLAKE_PUBLISH_WAREHOUSE": "PUBLISH_WH",
        "BATCH_INFERENCE_S3_BUCKET": s3_bucket,
        "BATCH_INFERENCE_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
    }
    for _ in range(2):  # the second run must replace, not duplicate
        done = materialize_cli("key:churn/*", DAY, tmp_path / "home", env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        log = done.stdout + done.stderr
        assert "Executing steps using multiprocess executor" in log
        assert "churn__scored_shards.churn__score_shard[shard_00001]" in log
    table = _predictions(snowflake, DAY)
    assert table.num_rows == SEED_CUSTOMERS
    assert len(set(table.column("customer_id").to_pylist())) == SEED_CUSTOMERS
    assert len(set(table.column("run_id").to_pylist())) == 1
    assert fs.ls(f"{s3_bucket}/batch-inference/dev/churn/scored/{DAY}")


def _served(server: dict[str, Any], **auth: Any) -> SnowflakeWarehouse:
    """A warehouse on the fakesnow server, authenticating as `auth` says."""
    return SnowflakeWarehouse(
        account=server["account"], user=server["user"], host=server["host"],
        port=server["port"], protocol=server["protocol"], database="BI_AUTH",
        schema_name="FEATURES_DEV", output_schema="PREDICTIONS_DEV", **auth,
    )  # fmt: skip


def _pem(key: rsa.RSAPrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def test_key_pair_auth_from_a_file_or_the_pem_itself(
    snowflake_server: dict[str, Any], tmp_path: Path
) -> None:
    """dagster-snowflake loads the key (decrypting it) and the connector signs in with it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encrypted = tmp_path / "bi_rsa_key.p8"
    encrypted.write_bytes(_pem(key, b"s3cret"))
    by_path = _served(
        snowflake_server, private_key_path=str(encrypted), private_key_password="s3cret"
    )
    assert by_path.query("SELECT 41 + 1 AS n").column("n").to_pylist() == [42]
    raw = _served(snowflake_server, private_key=_pem(key).decode())
    assert raw.query("SELECT 'pem' AS auth").column("auth").to_pylist() == ["pem"]

    wrong = _served(snowflake_server, private_key_path=str(encrypted), private_key_password="wrong")
    with pytest.raises(WarehouseError) as err:
        wrong.query("SELECT 1")
    assert "cannot connect to Snowflake account" in str(err.value)
    assert "private_key_password" in str(err.value)


def test_a_failed_statement_still_closes_the_session(
    snowflake_server: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """dagster-snowflake's get_connection cleans up only after a clean exit; we close anyway.

    fakesnow hands out no master token, so the connector cannot log the session out and
    `is_closed()` stays False; its log says whether `close()` ran."""
    warehouse = _served(snowflake_server, password=snowflake_server["password"])
    with caplog.at_level(logging.DEBUG, logger="snowflake.connector.connection"):
        with (
            pytest.raises(ProgrammingError, match="NO_SUCH_TABLE"),
            warehouse.connect() as failed,
        ):
            failed.cursor().execute("SELECT * FROM FEATURES_DEV.NO_SUCH_TABLE")
        with warehouse.connect() as ok:
            ok.cursor().execute("SELECT 1")
    closed = [r.getMessage() for r in caplog.records if "removed from registry" in r.getMessage()]
    assert any(f"Connection {id(failed)} " in m for m in closed)
    assert any(f"Connection {id(ok)} " in m for m in closed)


def test_bad_snowflake_credentials_name_the_settings() -> None:
    with snowflake_login_refused() as port:
        warehouse = _warehouse_at(port, password="wrong")
        with pytest.raises(WarehouseError) as err:
            warehouse.query("SELECT 1")
    message = str(err.value)
    assert "Incorrect username or password" in message
    assert "account 'acme'" in message and "password or private_key_path" in message


def _warehouse_at(port: int, **kw: Any) -> SnowflakeWarehouse:
    return SnowflakeWarehouse(
        account="acme", user="bi", host="127.0.0.1", port=port, protocol="http",
        database="ML", schema_name="FEATURES_DEV", output_schema="PREDICTIONS_DEV",
        login_timeout_seconds=5, **kw,
    )  # fmt: skip


def test_bad_s3_credentials_name_the_settings(s3_endpoint: str) -> None:
    with moto_s3_with_auth() as url:
        store = S3ObjectStore(
            bucket="any", endpoint_url=url, aws_access_key_id="bad", aws_secret_access_key="bad"
        )
        with pytest.raises(ObjectStoreError) as err:
            store.verify()
    assert "S3 refused access to bucket 'any'" in str(err.value)
    assert "object_store.aws_access_key_id and aws_secret_access_key" in str(err.value)


@pytest.fixture
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty AWS config and credentials file pair, and no credentials in the environment."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to wait for
    (tmp_path / "config").write_text("")
    (tmp_path / "credentials").write_text("")
    return tmp_path


def test_s3_profile_name_reaches_botocore(
    aws_files: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    # Only the profile knows the endpoint and the keys: the store works only if it is used.
    (aws_files / "config").write_text(f"[profile bi]\nendpoint_url = {s3_endpoint}\n")
    (aws_files / "credentials").write_text(
        f"[bi]\naws_access_key_id = {S3_KEY}\naws_secret_access_key = {S3_SECRET}\n"
    )
    store = S3ObjectStore(bucket=s3_bucket, prefix="bi", profile_name="bi")
    store.verify()
    store.path("hello.txt").write_text("from the profile")
    assert store.path("hello.txt").read_text() == "from the profile"

    with pytest.raises(ObjectStoreError) as err:
        S3ObjectStore(bucket=s3_bucket, profile_name="nope").verify()
    assert "ProfileNotFound" in str(err.value) and "profile_name" in str(err.value)
    with pytest.raises(ObjectStoreError) as err:
        S3ObjectStore(bucket=s3_bucket, endpoint_url=s3_endpoint).verify()
    assert "no AWS credentials found" in str(err.value)
    assert "object_store.aws_access_key_id and aws_secret_access_key, or profile_name" in str(
        err.value
    )


def test_s3_max_attempts_reaches_botocore() -> None:
    """botocore retries a 500 up to max_attempts; the failure names the settings to check."""
    counts = {}
    for attempts in (1, 3):
        with s3_internal_errors() as (url, received):
            store = S3ObjectStore(
                bucket="any", endpoint_url=url, aws_access_key_id=S3_KEY,
                aws_secret_access_key=S3_SECRET, max_attempts=attempts,
            )  # fmt: skip
            with pytest.raises(ObjectStoreError) as err:
                store.verify()
            counts[attempts] = len(received)
    assert counts[3] - counts[1] == 2
    assert "cannot reach S3 bucket 'any'" in str(err.value)
    assert "Check object_store.endpoint_url, region_name and profile_name" in str(err.value)


def test_unreachable_warehouse_publishes_nothing(
    churn_spec: PipelineSpec, snowflake: SnowflakeWarehouse, production: dict[str, Any]
) -> None:
    assert _run(churn_spec, production).success
    before = _predictions(snowflake)
    broken = _rebuilt(snowflake, port=9, login_timeout_seconds=3)
    result = _run(churn_spec, {**production, "warehouse": broken})
    assert not result.success
    message = failure_message(result)
    assert "pipeline 'churn', partition 2026-10-15, source_features" in message
    assert "cannot connect to Snowflake" in message
    assert _predictions(snowflake).equals(before)


def test_incremental_mode_on_snowflake_appends_only_new_ids(
    churn_spec: PipelineSpec, snowflake: SnowflakeWarehouse, production: dict[str, Any]
) -> None:
    spec = churn_spec.model_copy(  # challengers need every row each day: not incremental
        update={
            "output": churn_spec.output.model_copy(update={"mode": "incremental"}),
            "challengers": [],
        }
    )
    late = "customer_id % 8 = 0 AND snapshot_date = ?"
    with snowflake.connect() as con:  # 1,000 of the day's customers land late
        cur = con.cursor()
        cur.execute(
            "CREATE TABLE FEATURES_DEV.LATE AS SELECT * FROM FEATURES_DEV.CUSTOMER_FEATURES "
            f"WHERE {late}", [DAY],
        )  # fmt: skip
        cur.execute(f"DELETE FROM FEATURES_DEV.CUSTOMER_FEATURES WHERE {late}", [DAY])
    first = _run(spec, production)
    assert first.success, failure_message(first)
    assert _predictions(snowflake, DAY).num_rows == SEED_CUSTOMERS - 1_000

    with snowflake.connect() as con:
        con.cursor().execute(
            "INSERT INTO FEATURES_DEV.CUSTOMER_FEATURES SELECT * FROM FEATURES_DEV.LATE"
        )
    second = _run(spec, production)
    assert second.success, failure_message(second)
    assert second.output_for_node("churn__source_features").rows == 1_000
    table = _predictions(snowflake, DAY)
    assert table.num_rows == len(set(table.column("customer_id").to_pylist())) == SEED_CUSTOMERS
    assert set(table.column("run_id").to_pylist()) == {first.run_id, second.run_id}

    third = _run(spec, production)  # nothing new: succeeds and changes nothing
    assert third.success, failure_message(third)
    assert _predictions(snowflake, DAY).equals(table)


def test_a_hung_s3_fails_in_bounded_time_naming_the_bucket() -> None:
    """Connect and read timeouts are set (botocore's own are 60 s per read, times the retries,
    and s3fs waits on them): a server that accepts and never answers fails the call."""
    outcome: list[BaseException] = []

    def verify(store: S3ObjectStore) -> None:
        try:
            store.verify()
        except BaseException as err:
            outcome.append(err)

    with silent_peer() as url:
        store = S3ObjectStore(
            bucket="bi-silent", endpoint_url=url, aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET, connect_timeout_seconds=1, read_timeout_seconds=1,
            max_attempts=2,
        )  # fmt: skip
        assert store.storage_options["config_kwargs"]["read_timeout"] == 1
        call = threading.Thread(target=verify, args=(store,), daemon=True)
        call.start()
        call.join(timeout=120)
        assert not call.is_alive(), "still waiting on a server that never answers"
    assert len(outcome) == 1 and isinstance(outcome[0], ObjectStoreError)
    assert "bi-silent" in str(outcome[0]) and "timeout" in str(outcome[0]).lower()


def test_challengers_on_snowflake(
    churn_spec: PipelineSpec, snowflake: SnowflakeWarehouse, production: dict[str, Any]
) -> None:
    from tests.integration.test_challengers import (
        COMPARISON,
        average_ranks,
        metadata,
        with_challenger,
    )

    result = _run(with_challenger(churn_spec), production)
    assert result.success, failure_message(result)
    champion = _predictions(snowflake, DAY)
    shadow = snowflake.query(
        "SELECT * FROM PREDICTIONS_DEV.CHURN_PREDICTIONS_SHADOW WHERE partition_date = ? "
        "ORDER BY customer_id",
        [DAY],
    )
    assert shadow.column("customer_id").to_pylist() == champion.column("customer_id").to_pylist()
    a = np.array(champion.column("score").to_pylist())
    b = np.array(shadow.column("score").to_pylist())
    spearman = np.corrcoef(average_ranks(a), average_ranks(b))[0, 1]
    assert abs(metadata(result, COMPARISON)["challenger/spearman"] - spearman) < 1e-6
