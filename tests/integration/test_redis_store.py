"""The Redis sink against a real redis-server: values, the atomic switch, retries, faults."""

import random
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pytest
import redis

from batch_inference_assets.sinks.redis_store import (
    RedisSinkError,
    load_partition,
    pointer_key,
    read_row,
    row_key,
    version_of,
)
from batch_inference_assets.spec import RedisSinkSpec
from tests.servers import silent_peer
from tests.servers_redis import _free_port, redis_server

PIPELINE, DAY, NEXT_DAY = "churn", "2026-10-15", "2026-10-16"
PASSWORD = "s3cret-horse-battery"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(server, decode_responses=True) as c:
        c.flushall()
        yield c


def sink(**kw: Any) -> RedisSinkSpec:
    return RedisSinkSpec(
        url="redis://unused", key="churn:{customer_id}", fields=["score", "label"], **kw
    )


def scores(n: int, shift: float = 0.0, label: int = 0, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "customer_id": pa.array(ids, pa.int64()),
            "score": pa.array([shift + i / 7 for i in ids], pa.float64()),
            "label": pa.array([label] * n, pa.int64()),
        }
    )


def stored(table: pa.Table) -> dict[int, dict[str, str]]:
    """What read_row must return per id for a table made by `scores`."""
    return {
        row["customer_id"]: {"score": repr(row["score"]), "label": str(row["label"])}
        for row in table.to_pylist()
    }


def load(url: str, table: pa.Table, run_id: str, partition: str = DAY, **kw: Any) -> Any:
    spec = kw.pop("spec", None) or sink()
    return load_partition(
        spec, url, table.to_batches(max_chunksize=1_000),
        pipeline=PIPELINE, partition=partition, run_id=run_id, **kw,
    )  # fmt: skip


def data_keys(client: redis.Redis, version: str) -> list[str]:
    return sorted(client.scan_iter(match=f"churn:*@{version}", count=1_000))


def test_rows_are_stored_as_strings_with_a_ttl(server: str, client: redis.Redis) -> None:
    at = datetime(2026, 10, 15, 6, 30, tzinfo=UTC)
    table = pa.table(
        {
            "customer_id": pa.array([1, 2], pa.int64()),
            "score": pa.array([0.1 + 0.2, 1e-7], pa.float64()),
            "score32": pa.array([0.1, None], pa.float32()),
            "flag": pa.array([True, False]),
            "day": pa.array([date(2026, 10, 15)] * 2, pa.date32()),
            "at": pa.array([at, None], pa.timestamp("us", tz="UTC")),
            "segment": pa.array(["gold", None]),
            "visits": pa.array([3, None], pa.int64()),
        }
    )
    fields = ["score", "score32", "flag", "day", "at", "segment", "visits"]
    spec = RedisSinkSpec(
        url="redis://unused", key="churn:{customer_id}", fields=fields, ttl_hours=0.5
    )
    done = load(server, table, "8f0c2d4e-1a2b-4c3d-9e8f-0123456789ab", spec=spec)

    version = f"{DAY}~8f0c2d4e1a2b"
    assert (done.keys, done.version, done.pointer) == (2, version, "churn:current")
    assert (done.previous, done.switched, done.retired) == (None, True, 0)
    assert read_row(client, spec, {"customer_id": 1}) == {
        "score": "0.30000000000000004", "score32": "0.1", "flag": "true", "day": "2026-10-15",
        "at": "2026-10-15T06:30:00+00:00", "segment": "gold", "visits": "3",
    }  # fmt: skip
    assert read_row(client, spec, {"customer_id": 2}) == {
        "score": "1e-07", "score32": "", "flag": "false", "day": "2026-10-15",
        "at": "", "segment": "", "visits": "",
    }  # fmt: skip
    assert read_row(client, spec, {"customer_id": 3}) is None
    assert client.get("churn:current") == version
    assert client.ttl("churn:current") == -1  # the pointer outlives any one version
    assert data_keys(client, version) == [f"churn:1@{version}", f"churn:2@{version}"]
    assert all(1795 <= client.ttl(k) <= 1800 for k in data_keys(client, version))
    assert client.dbsize() == 3


def test_a_reload_switches_readers_at_once(server: str, client: redis.Redis) -> None:
    """A reader hammering rows while the same day is reloaded with other scores sees the old
    rows until the load is done and the new ones after, never a missing or a mixed row."""
    n = 20_000
    old, new = scores(n), scores(n, shift=1.0, label=1)
    load(server, old, "run-old")
    old_rows, new_rows = stored(old), stored(new)
    phase = ["before"]  # before -> loading -> written -> done
    seen: list[tuple[str, int, dict[str, str] | None]] = []
    stop = threading.Event()

    def reader() -> None:
        rng = random.Random(0)
        with redis.Redis.from_url(server, decode_responses=True) as c:
            while not stop.is_set():
                i = rng.randrange(n)
                now = phase[0]
                seen.append((now, i, read_row(c, sink(), {"customer_id": i})))

    def tracked() -> Iterator[pa.RecordBatch]:
        phase[0] = "loading"
        for batch in new.to_batches(max_chunksize=1_000):
            yield batch
            time.sleep(0.005)  # leaves the reader time to read during the load
        phase[0] = "written"

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        done = load_partition(
            sink(batch_rows=500), server, tracked(),
            pipeline=PIPELINE, partition=DAY, run_id="run-new",
        )  # fmt: skip
        phase[0] = "done"
        deadline = time.monotonic() + 10
        while sum(p == "done" for p, _, _ in seen) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert done.switched and done.previous == f"{DAY}~runold"
    assert all(row in (old_rows[i], new_rows[i]) for _, i, row in seen), "a missing or mixed row"
    during = [row == new_rows[i] for p, i, row in seen if p == "loading"]
    after = [row == new_rows[i] for p, i, row in seen if p == "done"]
    assert len(during) >= 20 and not any(during), "new rows were visible before the switch"
    assert len(after) >= 20 and all(after)
    versions = [row == new_rows[i] for _, i, row in seen]
    first_new = versions.index(True)
    assert all(versions[first_new:]), "a reader went back to the old day after the switch"


def test_a_backfill_of_an_older_day_does_not_switch_readers_back(
    server: str, client: redis.Redis
) -> None:
    later, older = scores(50, shift=1.0), scores(50)
    load(server, later, "run-a", partition=NEXT_DAY)
    backfill = load(server, older, "run-b", partition=DAY)

    assert (backfill.keys, backfill.switched) == (50, False)
    assert backfill.previous == f"{NEXT_DAY}~runa" == client.get("churn:current")
    assert backfill.retired == 0
    assert read_row(client, sink(), {"customer_id": 3}) == stored(later)[3]
    # The older day stays readable by its version, until its TTL.
    assert (
        read_row(client, sink(), {"customer_id": 3}, version=backfill.version) == stored(older)[3]
    )
    assert all(client.ttl(k) > 48 * 3600 - 10 for k in data_keys(client, f"{NEXT_DAY}~runa"))

    rerun = load(server, scores(50, shift=2.0), "run-c", partition=NEXT_DAY)
    assert rerun.switched and rerun.previous == f"{NEXT_DAY}~runa" and rerun.retired == 50
    assert client.get("churn:current") == f"{NEXT_DAY}~runc"


def test_a_retry_of_the_same_run_rewrites_the_same_keys(server: str, client: redis.Redis) -> None:
    table = scores(3_000)

    def broken() -> Iterator[pa.RecordBatch]:
        yield from table.to_batches(max_chunksize=1_000)[:2]
        raise OSError("the warehouse export went away")

    with pytest.raises(OSError, match="went away"):
        load_partition(
            sink(batch_rows=500), server, broken(),
            pipeline=PIPELINE, partition=DAY, run_id="run-1",
        )  # fmt: skip
    assert client.get("churn:current") is None  # a failed load switches nothing
    assert client.dbsize() == 2_000

    first = load(server, table, "run-1")
    again = load(server, table, "run-1")
    assert first.version == again.version == client.get("churn:current")
    assert (first.keys, again.keys) == (3_000, 3_000)
    assert again.switched and again.previous == first.version and again.retired == 0
    assert client.dbsize() == 3_000 + 1
    assert all(client.ttl(k) > 48 * 3600 - 10 for k in data_keys(client, first.version))
    expected = stored(table)
    assert all(read_row(client, sink(), {"customer_id": i}) == expected[i] for i in (0, 2_999))


def test_the_previous_version_expires_after_the_grace_period(
    server: str, client: redis.Redis
) -> None:
    first = load(server, scores(700), "run-1")
    second = load(server, scores(700, shift=1.0), "run-2", retire_after_seconds=1)
    assert second.previous == first.version and second.retired == 700

    old_keys, new_keys = data_keys(client, first.version), data_keys(client, second.version)
    assert len(old_keys) == len(new_keys) == 700
    assert all(0 <= client.ttl(k) <= 1 for k in old_keys)
    time.sleep(1.2)
    assert client.exists(*old_keys) == 0
    assert client.exists(*new_keys) == 700
    assert read_row(client, sink(), {"customer_id": 9}) == stored(scores(700, shift=1.0))[9]


def test_batches_are_pulled_as_they_are_written(server: str, client: redis.Redis) -> None:
    """Bounded memory: the load never runs more than `batch_rows` rows ahead of Redis."""
    in_redis_when_pulled: list[int] = []

    def batches() -> Iterator[pa.RecordBatch]:
        for b in range(100):
            in_redis_when_pulled.append(client.dbsize())
            yield scores(100, start=b * 100).to_batches()[0]

    done = load_partition(
        sink(batch_rows=250), server, batches(),
        pipeline=PIPELINE, partition=DAY, run_id="run-1",
    )  # fmt: skip
    assert done.keys == 10_000 and len(in_redis_when_pulled) == 100
    ahead = [b * 100 - n for b, n in enumerate(in_redis_when_pulled)]
    assert all(0 <= rows < 250 for rows in ahead), ahead


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (scores(10).drop_columns(["label"]), "no column label"),
        (
            scores(10).set_column(0, "customer_id", pa.array([1, None] * 5, pa.int64())),
            "key column customer_id has 5 nulls",
        ),
    ],
    ids=["missing_column", "null_key"],
)
def test_bad_rows_are_refused_before_any_write(
    server: str, client: redis.Redis, table: pa.Table, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as err:
        load(server, table, "run-1")
    assert f"pipeline {PIPELINE!r}, partition {DAY}" in str(err.value)
    assert client.dbsize() == 0


def _refusal(url: str, table: pa.Table | None = None, **kw: Any) -> RedisSinkError:
    with pytest.raises(RedisSinkError) as err:
        load(url, scores(10) if table is None else table, "run-2", **kw)
    message = str(err.value)
    assert f"pipeline {PIPELINE!r}, partition {DAY}" in message
    assert "warehouse table is untouched" in message
    assert PASSWORD not in "".join(traceback.format_exception(err.value))
    return err.value


def test_an_unreachable_server_fails_without_leaking_the_password() -> None:
    started = time.monotonic()
    err = _refusal(f"redis://:{PASSWORD}@127.0.0.1:{_free_port()}/0", connect_timeout=2)
    assert "cannot reach Redis" in str(err) and err.retryable
    assert "redis://:***@127.0.0.1" in str(err)
    assert time.monotonic() - started < 10  # a refused connection is retried briefly only


def test_a_wrong_password_is_an_authentication_failure() -> None:
    with redis_server(requirepass=PASSWORD) as url:
        err = _refusal(url.replace(PASSWORD, "not-the-password"))
        assert "authentication failed" in str(err) and "not-the-password" not in str(err)
        assert not err.retryable  # the same password fails the same way
        assert load(url, scores(10), "run-1").keys == 10  # the right one is let in


def test_a_silent_server_times_out() -> None:
    started = time.monotonic()
    with silent_peer() as http_url:
        url = http_url.replace("http://", f"redis://:{PASSWORD}@")
        err = _refusal(url, connect_timeout=0.3, socket_timeout=0.3)
    assert "no answer within 0.3s" in str(err)
    assert time.monotonic() - started < 10


def test_a_full_server_fails_and_readers_keep_the_day_they_had() -> None:
    with redis_server(maxmemory="3mb") as url, redis.Redis.from_url(url) as c:
        first = load(url, scores(100), "run-1")
        err = _refusal(url, scores(60_000, shift=1.0), spec=sink(batch_rows=1_000))
        assert "out of memory" in str(err) and "maxmemory" in str(err)
        assert c.get("churn:current") == first.version.encode()
        assert read_row(c, sink(), {"customer_id": 5}) == stored(scores(100))[5]


def test_keys_and_versions_are_named_as_documented() -> None:
    spec = RedisSinkSpec(url="redis://x", key="shop:{store}:{item}", fields=["units"])
    assert pointer_key(spec) == "shop:current"
    assert row_key(spec, {"store": 7, "item": "a-1"}) == "shop:7:a-1"
    assert version_of(DAY, "8f0c2d4e-1a2b-4c3d") == f"{DAY}~8f0c2d4e1a2b"
