"""A Snowflake that dies mid-publication: bounded failures, honest messages, no litter
(fakesnow behind a loopback proxy that stops answering on cue; see tests/servers.py)."""

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.contracts import Column, Contract
from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.io.snowflake_warehouse import SnowflakeWarehouse, staging_table_name
from batch_inference_assets.io.warehouse import PublishRequest, QueryTag, WarehouseError
from batch_inference_assets.models.store import ModelStore
from dagster_defs.deployments import role_resources
from tests.conftest import DAY as PIPELINE_DAY
from tests.conftest import OTHER_DAYS, failure_message
from tests.servers import (
    SnowflakeProxy,
    load_into_snowflake,
    seeded_features,
    silent_peer,
    snowflake_proxy,
)

DAY, OTHER_DAY = date(2026, 10, 15), date(2026, 10, 14)
RUN = "run-1"
CONTRACT = Contract.of([
    Column("customer_id", "int64", nullable=False),
    Column("score", "float64"),
    Column("partition_date", "date", nullable=False),
])  # fmt: skip
# Small enough that a dead server fails fast; a socket timeout well above what a fakesnow
# request takes on a busy machine (a timed-out request is retried, and fakesnow would run it
# again).
FAST = {
    "socket_timeout_seconds": 3, "publish_timeout_seconds": 4, "cleanup_timeout_seconds": 2,
    "login_timeout_seconds": 10, "network_timeout_seconds": 10, "export_timeout_seconds": 60,
}  # fmt: skip
JOIN_SECONDS = 120  # generous: ~10 s with FAST; it used to wait out 3 statement timeouts


def _warehouse(server: dict[str, Any], database: str, **kw: Any) -> SnowflakeWarehouse:
    return SnowflakeWarehouse(
        account=server["account"], user=server["user"], password=server["password"],
        host=server["host"], port=server["port"], protocol=server["protocol"],
        database=database, schema_name="FEATURES_DEV", output_schema="PREDICTIONS_DEV",
        **{**FAST, **kw},
    )  # fmt: skip


@pytest.fixture
def database(snowflake_server: dict[str, Any]) -> str:
    """A fresh fakesnow database whose output schema exists (an admin creates it once)."""
    name = f"BI_{uuid.uuid4().hex[:8].upper()}"
    with _warehouse(snowflake_server, name).connect() as con:
        con.cursor().execute("CREATE SCHEMA IF NOT EXISTS PREDICTIONS_DEV")
    return name


@pytest.fixture
def direct(snowflake_server: dict[str, Any], database: str) -> SnowflakeWarehouse:
    """The warehouse straight on fakesnow: what the next run (or an operator) sees."""
    return _warehouse(snowflake_server, database)


@pytest.fixture
def proxy(snowflake_server: dict[str, Any]) -> Iterator[SnowflakeProxy]:
    with snowflake_proxy(snowflake_server) as running:
        yield running


def _through(
    proxy: SnowflakeProxy, server: dict[str, Any], database: str, **kw: Any
) -> SnowflakeWarehouse:
    """The warehouse on fakesnow, through `proxy`."""
    return _warehouse({**server, **proxy.connection_kwargs()}, database, **kw)


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(root=str(tmp_path / "store"))


def _files(store: LocalObjectStore, ids: list[int], day: date = DAY) -> list[str]:
    folder = Path(store.path("scored", uuid.uuid4().hex).path)
    folder.mkdir(parents=True)
    table = pa.table(
        {"customer_id": ids, "score": [0.5] * len(ids), "partition_date": [day] * len(ids)},
        schema=CONTRACT.arrow_schema(),
    )
    half = len(ids) // 2
    for i, part in enumerate([table.slice(0, half), table.slice(half)]):
        pq.write_table(part, folder / f"shard_{i:05d}.parquet")
    return [str(folder / f"shard_{i:05d}.parquet") for i in range(2)]


def _request(files: list[str], day: date = DAY, table: str = "scores") -> PublishRequest:
    return PublishRequest(
        table=table, contract=CONTRACT, partition_column="partition_date",
        partition_value=day, files=files, mode="replace_partition", id_columns=["customer_id"],
        score_column="score", tag=QueryTag("churn", day.isoformat(), RUN, "predictions"),
    )  # fmt: skip


def _publish(
    warehouse: SnowflakeWarehouse, store: LocalObjectStore, request: PublishRequest
) -> None:
    with warehouse.stage_publication(request, store) as staged:
        staged.commit()


def _ids(warehouse: SnowflakeWarehouse, day: date = DAY) -> list[int]:
    rows = warehouse.query(
        "SELECT customer_id FROM PREDICTIONS_DEV.SCORES WHERE partition_date = ? ORDER BY 1", [day]
    )
    return [r["customer_id"] for r in rows.to_pylist()]


def _staging_tables(warehouse: SnowflakeWarehouse) -> list[str]:
    rows = warehouse.query(
        "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = 'PREDICTIONS_DEV' "
        "AND TABLE_NAME LIKE 'BI_STAGE_%' ORDER BY 1"
    )
    return [str(next(iter(r.values()))) for r in rows.to_pylist()]


def _in_time(call: Callable[[], None], join: float = JOIN_SECONDS) -> BaseException | None:
    """Run `call` on a thread; what it raised, once it has ended within `join` seconds."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as err:
            raised.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=join)
    assert not worker.is_alive(), "still waiting on a Snowflake that stopped answering"
    return raised[0] if raised else None


def test_a_snowflake_dying_after_the_delete_fails_in_bounded_time_and_says_the_rollback_failed(
    snowflake_server: dict[str, Any],
    database: str,
    direct: SnowflakeWarehouse,
    store: LocalObjectStore,
) -> None:
    _publish(direct, store, _request(_files(store, [1, 2, 3])))
    with snowflake_proxy(snowflake_server) as proxy:
        dying = _through(proxy, snowflake_server, database)
        proxy.silent_after = r"^DELETE FROM PREDICTIONS_DEV\.SCORES\b"
        err = _in_time(lambda: _publish(dying, store, _request(_files(store, [7, 8, 9, 10]))))
        assert proxy.silenced.is_set() and proxy.swallowed
        # Nothing else was tried on a session whose ROLLBACK went unanswered.
        delete = next(i for i, s in enumerate(proxy.statements) if s.startswith("DELETE"))
        after_delete = proxy.statements[delete + 1 :]
        # (the connector retries an unanswered statement within its timeout)
        assert list(dict.fromkeys(s.split()[0] for s in after_delete)) == ["INSERT", "ROLLBACK"]
        # Other sessions never saw the uncommitted DELETE.
        assert _ids(direct) == [1, 2, 3]
    assert isinstance(err, WarehouseError)
    message = str(err)
    assert "rolled back:" not in message
    assert "publishing to PREDICTIONS_DEV.scores failed: " in message
    assert "no usable answer from Snowflake within warehouse.publish_timeout_seconds=4" in message
    assert "The ROLLBACK failed too (" in message
    assert "Snowflake discards the open transaction when the session ends" in message
    left = staging_table_name("scores", DAY)[:-16]
    assert f"Left behind: the staging table PREDICTIONS_DEV.{left}" in message
    assert "which the next publication of PREDICTIONS_DEV.scores for 2026-10-15 drops" in message

    # The dead run's staging table is still there, and the next publication drops it.
    assert [t[:-16] for t in _staging_tables(direct)] == [left]
    _publish(direct, store, _request(_files(store, [4, 5])))
    assert _ids(direct) == [4, 5]
    assert _staging_tables(direct) == []


def test_a_failed_swap_on_a_live_snowflake_says_rolled_back(
    direct: SnowflakeWarehouse, store: LocalObjectStore
) -> None:
    _publish(direct, store, _request(_files(store, [1, 2, 3])))
    with (
        pytest.raises(WarehouseError) as err,
        direct.stage_publication(_request(_files(store, [7, 8])), store) as staged,
    ):
        with direct.connect() as con:  # the INSERT will fail with an answer: a live server
            con.cursor().execute(f"DROP TABLE PREDICTIONS_DEV.{_staging_tables(direct)[0]}")
        staged.commit()
    assert re.match(r"publishing to PREDICTIONS_DEV\.scores failed, rolled back: ", str(err.value))
    assert "ROLLBACK failed" not in str(err.value)
    assert _ids(direct) == [1, 2, 3]


def test_an_unanswered_commit_is_reported_as_unknown(
    snowflake_server: dict[str, Any], database: str, store: LocalObjectStore, proxy: SnowflakeProxy
) -> None:
    dying = _through(proxy, snowflake_server, database)
    proxy.silent_after = r"^INSERT INTO PREDICTIONS_DEV\.SCORES\b"
    err = _in_time(lambda: _publish(dying, store, _request(_files(store, [1, 2]))))
    assert isinstance(err, WarehouseError)
    message = str(err)
    assert "the COMMIT got no answer" in message and "is unknown" in message
    assert "rolled back" not in message
    assert "The ROLLBACK sent after it failed too" in message


def _discard(_: object) -> None:
    pass


def test_a_silent_snowflake_fails_the_login_in_bounded_time() -> None:
    with silent_peer() as url:
        port = int(url.rsplit(":", 1)[1])
        warehouse = _warehouse(
            {"account": "acme", "user": "bi", "password": "pw", "host": "127.0.0.1",
             "port": port, "protocol": "http"},
            "ML", login_timeout_seconds=2, socket_timeout_seconds=1,
        )  # fmt: skip
        # 15 x what it takes; the connector's own 60 s socket timeout used to decide it.
        err = _in_time(lambda: _discard(warehouse.query("SELECT 1")), join=30)
    assert isinstance(err, WarehouseError)
    assert "cannot connect to Snowflake account 'acme'" in str(err)


def test_each_phase_sets_its_own_statement_timeout_on_the_session(
    snowflake_server: dict[str, Any],
    database: str,
    store: LocalObjectStore,
    proxy: SnowflakeProxy,
) -> None:
    """Snowflake enforces STATEMENT_TIMEOUT_IN_SECONDS itself (fakesnow ignores it): the
    sessions carry the export's and the publication's own, and the socket timeout."""
    warehouse = _through(
        proxy, snowflake_server, database,
        export_timeout_seconds=1800, publish_timeout_seconds=240, network_timeout_seconds=90,
    )  # fmt: skip
    tag = QueryTag("churn", DAY.isoformat(), RUN, "source_features")
    warehouse.export_query(
        "SELECT 1 AS n", [], store, "features/x", max_file_bytes=1 << 20, row_group_rows=100,
        tag=tag,
    )  # fmt: skip
    _publish(warehouse, store, _request(_files(store, [1, 2])))
    warehouse.query("SELECT 1")
    by_stage = {
        json.loads(p.get("QUERY_TAG", '{"stage": "none"}'))["stage"]: p for p in proxy.logins
    }
    assert by_stage["source_features"]["STATEMENT_TIMEOUT_IN_SECONDS"] == 1800
    assert by_stage["predictions"]["STATEMENT_TIMEOUT_IN_SECONDS"] == 240
    assert by_stage["none"]["STATEMENT_TIMEOUT_IN_SECONDS"] == 90
    assert all(p["CLIENT_TELEMETRY_ENABLED"] is False for p in proxy.logins)
    resource = warehouse.snowflake_resource()
    assert (resource.additional_snowflake_connection_args or {})["socket_timeout"] == 3


def test_leftover_staging_tables_of_the_same_table_and_day_are_dropped_and_no_others(
    direct: SnowflakeWarehouse, store: LocalObjectStore
) -> None:
    _publish(direct, store, _request(_files(store, [1, 2], OTHER_DAY), OTHER_DAY))
    leftover = staging_table_name("scores", DAY)  # as a killed run leaves it
    keep = [
        staging_table_name("scores", OTHER_DAY),  # another day, maybe publishing right now
        staging_table_name("scores_v2", DAY),  # another table
        "BI_STAGE_0123456789ABCDEF",  # the old names say nothing of their table or day
        f"{leftover}_X",
        "SCORES_BACKUP",
    ]
    with direct.connect() as con:
        for name in (leftover, *keep):
            con.cursor().execute(
                f"CREATE TRANSIENT TABLE PREDICTIONS_DEV.{name} (customer_id NUMBER)"
            )
    _publish(direct, store, _request(_files(store, [3, 4])))
    tables = direct.query(
        "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = 'PREDICTIONS_DEV'"
    )
    names = set(tables.column(0).to_pylist())
    assert leftover not in names
    assert set(keep) <= names
    assert _ids(direct) == [3, 4] and _ids(direct, OTHER_DAY) == [1, 2]


def _stage_files(warehouse: SnowflakeWarehouse, run: str = RUN) -> list[str]:
    """Files under @BATCH_INFERENCE_STAGE/churn/<DAY>/<run>/ (fakesnow lists whole stages)."""
    rows = warehouse.query("LIST @PREDICTIONS_DEV.BATCH_INFERENCE_STAGE")
    names = [str(r["name"]).split("/", 1)[1] for r in rows.to_pylist()]
    return [n for n in names if n.startswith(f"churn/{DAY.isoformat()}/{run}/")]


def test_put_mode_leaves_no_files_of_the_run_in_the_stage(
    direct: SnowflakeWarehouse, store: LocalObjectStore, tmp_path: Path
) -> None:
    # Another run's folder of the same day, which is not this run's to remove.
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"customer_id": [1]}), other / "shard_00000.parquet")
    with direct.connect() as con:
        con.cursor().execute("CREATE STAGE IF NOT EXISTS PREDICTIONS_DEV.BATCH_INFERENCE_STAGE")
        con.cursor().execute(
            f"PUT 'file://{other}/shard_00000.parquet' "
            f"@PREDICTIONS_DEV.BATCH_INFERENCE_STAGE/churn/{DAY.isoformat()}/run-0/ "
            "AUTO_COMPRESS = FALSE"
        )

    _publish(direct, store, _request(_files(store, [1, 2, 3])))  # published
    assert _stage_files(direct) == []
    with direct.stage_publication(_request(_files(store, [4, 5])), store) as staged:
        staged.rollback()  # as a failed gate does
    assert _stage_files(direct) == []
    assert _stage_files(direct, "run-0") == [f"churn/{DAY.isoformat()}/run-0/shard_00000.parquet"]


def test_a_failed_load_removes_only_its_own_stage_folder(
    snowflake_server: dict[str, Any],
    database: str,
    store: LocalObjectStore,
    proxy: SnowflakeProxy,
) -> None:
    """fakesnow has no REMOVE: this checks the statement sent, not its effect."""
    warehouse = _through(proxy, snowflake_server, database)
    files = _files(store, [1, 2, 3])
    Path(files[1]).write_bytes(b"not parquet")  # uploaded fine, refused by COPY INTO
    with (
        pytest.raises(WarehouseError, match=r"publishing to PREDICTIONS_DEV\.scores failed"),
        warehouse.stage_publication(_request(files), store),
    ):
        pytest.fail("staging should have failed")
    removes = [s for s in proxy.statements if s.split()[0] in ("REMOVE", "RM")]
    assert len(removes) == 1
    stage = "@PREDICTIONS_DEV\\.BATCH_INFERENCE_STAGE"
    own = rf"REMOVE {stage}/churn/{DAY}/{RUN}/predictions/[0-9a-f]{{32}}/"
    assert re.fullmatch(own, removes[0]), removes[0]
    put = next(s for s in proxy.statements if s.startswith("PUT "))
    assert put.split()[2] == removes[0].split()[1], "it removes the folder it put the files in"
    # The files first (nobody else removes them), then the staging table.
    after = proxy.statements[proxy.statements.index(removes[0]) :]
    assert [s.split()[0] for s in after[:2]] == ["REMOVE", "DROP"]
    assert _staging_tables(warehouse) == []


def test_the_step_names_pipeline_partition_and_the_failed_rollback(
    root: Path,
    churn_spec: PipelineSpec,
    snowflake_server: dict[str, Any],
    database: str,
    proxy: SnowflakeProxy,
) -> None:
    """The whole graph, with Snowflake dying once the publication's DELETE has run."""
    kwargs = {k: v for k, v in snowflake_server.items() if k != "network_timeout"}
    load_into_snowflake(
        kwargs, database, "FEATURES_DEV.CUSTOMER_FEATURES",
        seeded_features(root / "warehouse.duckdb", [*OTHER_DAYS, PIPELINE_DAY]),
    )  # fmt: skip
    load_into_snowflake(  # the late labels churn's realized_performance reads
        kwargs, database, "FEATURES_DEV.CHURN_OUTCOMES",
        seeded_features(root / "warehouse.duckdb", [*OTHER_DAYS, PIPELINE_DAY], "churn_outcomes"),
    )  # fmt: skip
    warehouse = _through(
        proxy, snowflake_server, database, socket_timeout_seconds=5, publish_timeout_seconds=6
    )
    resources = role_resources(
        warehouse,
        LocalObjectStore(root=str(root / "object_store")),
        ModelStore(store=LocalObjectStore(root=str(root / "models"))),
    )
    proxy.silent_after = r"^DELETE FROM PREDICTIONS_DEV\.CHURN_PREDICTIONS\b"
    outcome: list[dg.ExecuteInProcessResult] = []

    def run() -> None:
        assets = build_pipeline(churn_spec).assets
        outcome.append(
            dg.materialize(
                assets, partition_key=PIPELINE_DAY, resources=resources, raise_on_error=False
            )
        )

    err = _in_time(run)
    assert err is None and not outcome[0].success
    message = failure_message(outcome[0])
    assert message.startswith(
        f"pipeline 'churn', partition {PIPELINE_DAY}, predictions: nothing published: "
        "publishing to PREDICTIONS_DEV.churn_predictions failed: "
    )
    assert "The ROLLBACK failed too" in message
