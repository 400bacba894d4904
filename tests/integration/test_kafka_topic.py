"""The Kafka sink against a real Kafka-protocol broker (Tansu): what arrives, where, how often."""

import contextlib
import json
import math
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from batch_inference_assets.sinks.kafka_topic import (
    KafkaDelivery,
    KafkaSinkError,
    decode_value,
    message_value,
    produce_partition,
    producer_config,
)
from batch_inference_assets.spec import KafkaSinkSpec
from tests.servers import _free_port, silent_peer
from tests.servers_kafka import Consumed, KafkaBroker, consume_all, create_topic, kafka_broker

DAY = "2026-10-15"
SCORED_AT = datetime(2026, 10, 15, 3, 4, 5, 123456, tzinfo=UTC)
# Doubles whose shortest repr is long, tiny or subnormal: a lossy encoding would change them.
AWKWARD = [0.1, 1 / 3, 2 / 3 * 1e-300, 5e-324, 1.7976931348623157e308, -0.0]


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with kafka_broker() as running:
        yield running


def new_topic(broker: KafkaBroker, partitions: int = 4) -> str:
    name = f"predictions-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap_servers, name, partitions)
    return name


def sink(bootstrap_servers: str, topic: str, flush_seconds: float = 30) -> KafkaSinkSpec:
    return KafkaSinkSpec(
        bootstrap_servers=bootstrap_servers, topic=topic, key="customer_id",
        flush_seconds=flush_seconds,
    )  # fmt: skip


def score(i: int, shift: float) -> float:
    base = AWKWARD[i % len(AWKWARD)] if i % 5 == 0 else i / 7
    return base + shift if shift else base  # -0.0 + 0.0 would be 0.0


def scored_rows(ids: range, run_id: str, model_version: str, shift: float = 0.0) -> list[dict]:
    """Rows as the published table holds them (the expected message values are built from
    these by hand, not by the code under test)."""
    return [
        {
            "customer_id": i,
            "score": score(i, shift),
            "label": i % 2,
            "segment": None if i % 3 == 0 else f"région-{i % 4}",
            "model_version": model_version,
            "scored_at": SCORED_AT + timedelta(microseconds=i),
            "run_id": run_id,
            "partition_date": date(2026, 10, 15),
        }
        for i in ids
    ]


SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("score", pa.float64()),
        ("label", pa.int64()),
        ("segment", pa.string()),
        ("model_version", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("partition_date", pa.date32()),
    ]
)


def as_batches(rows: list[dict], batch_rows: int) -> list[pa.RecordBatch]:
    return [
        pa.RecordBatch.from_pylist(rows[i : i + batch_rows], schema=SCHEMA)
        for i in range(0, len(rows), batch_rows)
    ]


def as_json(row: dict) -> dict:
    """What a consumer must read back: ISO-8601 dates and timestamps, the same doubles."""
    return {
        **row,
        "scored_at": row["scored_at"].isoformat(),  # 2026-10-15T03:04:05.123456+00:00
        "partition_date": row["partition_date"].isoformat(),
    }


def headers(run_id: str, model_version: str) -> dict[str, bytes]:
    return {
        "pipeline": b"churn", "partition": DAY.encode(), "model_version": model_version.encode(),
        "run_id": run_id.encode(),
    }  # fmt: skip


def produce(
    spec: KafkaSinkSpec,
    batches: Iterable[pa.RecordBatch],
    run_id: str,
    settings: dict[str, Any] | None = None,
) -> KafkaDelivery:
    return produce_partition(
        spec, settings or {}, batches, pipeline="churn", partition=DAY, run_id=run_id
    )


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's Java default partitioner for a keyed record (Utils.murmur2, toPositive, mod)."""
    m, h = 0x5BD1E995, 0x9747B28C ^ len(key)
    for i in range(0, len(key) - len(key) % 4, 4):
        k = (int.from_bytes(key[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = key[len(key) - len(key) % 4 :]
    if rest:
        h ^= int.from_bytes(rest, "little")
        h = (h * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def latest_per_row(messages: list[Consumed]) -> dict[tuple[bytes | None, bytes], Consumed]:
    """The consumer's de-duplication rule: per (key, partition header), the highest offset."""
    latest: dict[tuple[bytes | None, bytes], Consumed] = {}
    for msg in sorted(messages, key=lambda m: (m.partition, m.offset)):
        latest[(msg.key, msg.headers["partition"])] = msg
    return latest


def test_every_row_arrives_once_with_its_key_value_and_headers(broker: KafkaBroker) -> None:
    topic = new_topic(broker)
    rows = scored_rows(range(1, 2_501), "run-1", "churn@f5a0")
    delivery = produce(sink(broker.bootstrap_servers, topic), as_batches(rows, 1_000), "run-1")

    messages = consume_all(broker.bootstrap_servers, topic)
    assert delivery.messages == len(messages) == len(rows)
    assert delivery.topic == topic
    assert delivery.partitions == dict(Counter(m.partition for m in messages))
    by_key = {m.key: m for m in messages}
    assert len(by_key) == len(rows)  # no row twice
    for row in rows:
        msg = by_key[str(row["customer_id"]).encode()]
        assert msg.value is not None
        assert decode_value(msg.value) == as_json(row)
        assert msg.headers == headers("run-1", "churn@f5a0")
    # Types survive, not only values: ints stay ints, a None stays null.
    sample = decode_value(by_key[b"3"].value or b"")
    assert type(sample["customer_id"]) is int and sample["segment"] is None
    assert math.copysign(1, decode_value(by_key[b"5"].value or b"")["score"]) == -1  # -0.0


def test_keys_pick_partitions_as_java_clients_do(broker: KafkaBroker) -> None:
    topic = new_topic(broker, partitions=6)
    rows = scored_rows(range(3_000), "run-1", "churn@f5a0")
    delivery = produce(sink(broker.bootstrap_servers, topic), as_batches(rows, 1_000), "run-1")

    messages = consume_all(broker.bootstrap_servers, topic, count=len(rows))
    assert len(messages) == len(rows)
    assert sorted(delivery.partitions) == list(range(6))  # spread over every partition
    for msg in messages:
        assert msg.key is not None
        assert msg.partition == murmur2_partition(msg.key, 6), msg.key


def test_a_rerun_produces_again_and_the_newest_run_wins_per_key(broker: KafkaBroker) -> None:
    """At least once across runs: a failed attempt, then two complete runs, all land; the
    consumer's rule (the highest offset per key and partition header) leaves exactly the rows
    of the last run."""
    topic = new_topic(broker)
    spec = sink(broker.bootstrap_servers, topic)
    ids = range(1_200)

    def failing_source() -> Iterator[pa.RecordBatch]:
        yield from as_batches(scored_rows(ids, "run-0", "churn@old"), 400)[:2]
        raise OSError("warehouse connection lost")

    with pytest.raises(OSError, match="warehouse connection lost"):
        produce(spec, failing_source(), "run-0")  # the source's error, not swallowed
    first = produce(spec, as_batches(scored_rows(ids, "run-1", "churn@v1"), 400), "run-1")
    newest = scored_rows(ids, "run-2", "churn@v2", shift=1.0)
    second = produce(spec, as_batches(newest, 400), "run-2")

    messages = consume_all(broker.bootstrap_servers, topic)
    assert first.messages == second.messages == len(ids)
    assert len(messages) >= 2 * len(ids)  # produced again: duplicates across runs
    runs = Counter(m.headers["run_id"] for m in messages)
    assert runs[b"run-1"] == runs[b"run-2"] == len(ids)
    # Every message of a key sits in one Kafka partition, so offsets order the runs.
    assert len({(m.key, m.partition) for m in messages}) == len(ids)
    latest = latest_per_row(messages)
    assert len(latest) == len(ids)
    assert {m.headers["run_id"] for m in latest.values()} == {b"run-2"}
    assert sorted((decode_value(m.value or b"") for m in latest.values()), key=str) == sorted(
        (as_json(r) for r in newest), key=str
    )


def test_batches_are_read_one_at_a_time_through_a_queue_smaller_than_a_batch(
    broker: KafkaBroker,
) -> None:
    """The batches are pulled as the producer goes, and none is kept: a source that is listed
    first (or kept) would show every earlier batch still alive when the next one is pulled.
    The local queue holds 200 messages, a batch 500: the full-queue path has to work."""
    topic = new_topic(broker, partitions=3)
    alive_when_pulled: list[int] = []
    earlier: list[weakref.ref[pa.RecordBatch]] = []

    def source() -> Iterator[pa.RecordBatch]:
        for start in range(0, 10_000, 500):
            alive_when_pulled.append(sum(ref() is not None for ref in earlier))
            batch = as_batches(scored_rows(range(start, start + 500), "run-1", "m@1"), 500)[0]
            earlier.append(weakref.ref(batch))
            yield batch

    small_queue = {"queue.buffering.max.messages": 200}
    delivery = produce(sink(broker.bootstrap_servers, topic), source(), "run-1", small_queue)

    assert len(alive_when_pulled) == 20
    assert max(alive_when_pulled) <= 1, alive_when_pulled  # only the batch being produced
    messages = consume_all(broker.bootstrap_servers, topic, count=10_000)
    assert delivery.messages == len(messages) == len({m.key for m in messages}) == 10_000


@contextlib.contextmanager
def unreachable(peer: str) -> Iterator[str]:
    """Bootstrap servers where nothing listens, or where a peer accepts and never answers."""
    if peer == "refused":
        yield f"127.0.0.1:{_free_port()}"
        return
    with silent_peer() as url:
        yield url.removeprefix("http://")


@pytest.mark.parametrize("peer", ["refused", "silent"])
def test_an_unreachable_broker_fails_in_bounded_time(peer: str) -> None:
    """Nothing listens (connection refused), or a peer accepts and never answers: the sink
    fails within flush_seconds, naming where, without reading a row or echoing a password."""
    pulled = []

    def source() -> Iterator[pa.RecordBatch]:
        pulled.append(1)
        yield from as_batches(scored_rows(range(10), "run-1", "m@1"), 10)

    settings = {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": "bi", "sasl.password": "hunter2-never-shown",
    }  # fmt: skip
    with unreachable(peer) as bootstrap:
        started = time.monotonic()
        with pytest.raises(KafkaSinkError) as raised:
            produce(sink(bootstrap, "predictions", flush_seconds=2), source(), "run-1", settings)
        elapsed = time.monotonic() - started
    message = str(raised.value)
    assert elapsed < 2 + 3, elapsed
    assert "pipeline 'churn'" in message and DAY in message and "'predictions'" in message
    assert "hunter2" not in message
    assert pulled == []  # failed before reading the partition


def test_a_broker_that_dies_mid_partition_fails_in_bounded_time() -> None:
    """Killed after the first batch: the queued messages time out at flush_seconds, and the
    partition stops at that first failure instead of waiting on every message."""
    with kafka_broker() as doomed:
        topic = new_topic(doomed)
        batches = as_batches(scored_rows(range(5_000), "run-1", "m@1"), 1_000)
        killed_at = []

        def source() -> Iterator[pa.RecordBatch]:
            yield batches[0]
            doomed.stop()
            killed_at.append(time.monotonic())
            yield from batches[1:]

        with pytest.raises(KafkaSinkError) as raised:
            produce(sink(doomed.bootstrap_servers, topic, flush_seconds=3), source(), "run-1")
        after_kill = time.monotonic() - killed_at[0]
    message = str(raised.value)
    assert after_kill < 3 + 2, after_kill  # message.timeout.ms = flush_seconds, then stop
    assert f"pipeline 'churn', partition {DAY}, Kafka topic {topic!r}" in message
    assert "of 5000 messages not delivered" in message
    assert "first error: Local: Message timed out" in message and "Connection refused" in message


def test_a_row_value_is_json_with_iso_dates_and_exact_doubles() -> None:
    value = message_value(
        {"id": 7, "score": 0.1 + 0.2, "nan": math.nan, "inf": -math.inf, "none": None,
         "day": date(2026, 10, 15), "at": SCORED_AT, "flag": True, "text": "é"}
    )  # fmt: skip
    assert json.loads(value) == {
        "id": 7, "score": 0.30000000000000004, "nan": None, "inf": None, "none": None,
        "day": "2026-10-15", "at": "2026-10-15T03:04:05.123456+00:00", "flag": True, "text": "é",
    }  # fmt: skip
    assert "é" in value.decode()  # UTF-8, not \\u escapes


def test_the_settings_the_guarantee_rests_on_cannot_be_changed() -> None:
    spec = sink("127.0.0.1:9", "predictions")
    with pytest.raises(ValueError, match=r"\['acks'\] may not be changed"):
        producer_config(spec, {"acks": "1"})
    config = producer_config(spec, {"compression.type": "zstd", "acks": "all"})
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["compression.type"] == "zstd"  # a default the spec may override
    assert config["message.timeout.ms"] == 30_000  # tied to flush_seconds


def test_a_refused_setting_read_from_the_environment_is_not_echoed() -> None:
    """librdkafka quotes a value it refuses; a setting from settings_env is a secret."""
    spec = KafkaSinkSpec(
        bootstrap_servers="127.0.0.1:9", topic="predictions", key="customer_id",
        settings_env={"security.protocol": "KAFKA_PROTOCOL"}, flush_seconds=2,
    )  # fmt: skip
    with pytest.raises(ValueError) as raised:
        produce(spec, [], "run-1", {"security.protocol": "s3cret-typed-in-the-wrong-place"})
    assert "s3cret" not in str(raised.value)
    assert "security.protocol" in str(raised.value) and "'predictions'" in str(raised.value)
