"""A published partition's rows produced to a Kafka topic: one keyed JSON message per row.

Delivery: the producer is idempotent (acks=all), so librdkafka's own retries within one call
never write a message twice. Producing the partition again (a re-run, a retried step) writes
every row again: across runs delivery is at least once. All messages of one key go to one Kafka
partition (murmur2, as Java clients hash keys), where offsets order the runs: a consumer keeps,
per (key, `partition` header), the message with the highest offset, which is the newest run's.
"""

import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any

import pyarrow as pa
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from batch_inference_assets.sinks import SinkError
from batch_inference_assets.spec import KafkaSinkSpec

MODEL_VERSION_COLUMN = "model_version"
HEADERS = ("pipeline", "partition", "model_version", "run_id")

# Settings the delivery guarantee rests on: a spec's settings may not change them.
FIXED_SETTINGS = {"enable.idempotence": True, "acks": "all"}
# Defaults a spec's settings may override. The local queue is bounded (librdkafka's default is
# 1 GiB); murmur2 puts a key on the partition a Java producer would choose.
DEFAULT_SETTINGS: dict[str, Any] = {
    "compression.type": "lz4",
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.kbytes": 65_536,
    "linger.ms": 20,
    "partitioner": "murmur2_random",
}
# Whose values never appear in an error (besides every setting read from the environment).
_SECRET_SETTING = re.compile(r"password|secret|\.pem$|\.key$|oauthbearer\.config|jaas", re.I)
_POLL_EVERY = 1_000  # messages between two polls: serves delivery reports, frees queue space
_FULL_QUEUE_WAIT = 0.2  # seconds per poll while the local queue is full (or per flush)
_FLUSH_GRACE = 5.0  # seconds past message.timeout.ms, so a timeout arrives as a delivery report

logger = logging.getLogger(__name__)


class KafkaSinkError(SinkError):
    """Some of a partition's messages were not delivered (broker down, refused, timed out)."""


@dataclass(frozen=True)
class KafkaDelivery:
    messages: int
    topic: str
    partitions: dict[int, int]  # messages delivered per topic partition


def producer_config(
    spec: KafkaSinkSpec, settings: Mapping[str, Any], log: logging.Logger | None = None
) -> dict[str, Any]:
    """librdkafka settings: ours, then the spec's (secrets merged in), then the fixed ones.

    Every wait is tied to `flush_seconds`, so an unreachable broker ends the call in bounded
    time: a message not acknowledged within it is reported failed."""
    conflicts = [
        name
        for name, fixed in {**FIXED_SETTINGS, "bootstrap.servers": spec.bootstrap_servers}.items()
        if name in settings and str(settings[name]).lower() != str(fixed).lower()
    ]
    if conflicts:
        raise ValueError(
            f"Kafka topic {spec.topic!r}: settings {conflicts} may not be changed "
            f"(the sink sets {', '.join(f'{k}={v}' for k, v in FIXED_SETTINGS.items())} "
            "and bootstrap.servers from bootstrap_servers)"
        )
    timeout_ms = max(round(spec.flush_seconds * 1000), 100)
    return {
        **DEFAULT_SETTINGS,
        "message.timeout.ms": timeout_ms,
        "socket.timeout.ms": min(timeout_ms, 60_000),
        "socket.connection.setup.timeout.ms": min(timeout_ms, 30_000),
        **({"logger": log} if log is not None else {}),
        **settings,
        **FIXED_SETTINGS,
        "bootstrap.servers": spec.bootstrap_servers,
    }


def message_key(value: Any) -> bytes:
    """A key column's value as UTF-8 text: 42 -> b"42", as a Java StringSerializer would."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, date | datetime | time_of_day):
        return value.isoformat().encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, date | datetime | time_of_day) or hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact; a JSON number would go through a float
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def message_value(row: Mapping[str, Any]) -> bytes:
    """A row as a JSON object: dates and timestamps in ISO-8601, floats exact (shortest repr
    that reads back to the same double), None as null; NaN and infinities, which JSON cannot
    write, as null."""
    clean = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()
    }
    return json.dumps(clean, default=_json_default, ensure_ascii=False, allow_nan=False).encode()


def decode_value(value: bytes) -> dict[str, Any]:
    """A message's value back to a dict (dates and timestamps stay ISO-8601 strings)."""
    decoded: dict[str, Any] = json.loads(value)
    return decoded


def check_key_column(batch: pa.RecordBatch, key_column: str) -> None:
    """Every row of the batch has a key (a message without one could not be de-duplicated)."""
    if key_column not in batch.schema.names:
        raise ValueError(f"the key column {key_column!r} is not among {batch.schema.names}")
    nulls = batch.column(key_column).null_count
    if nulls:
        raise ValueError(f"{nulls} rows have no {key_column!r}: every message needs a key")


def batch_messages(
    batch: pa.RecordBatch, key_column: str
) -> Iterator[tuple[bytes, bytes, str | None]]:
    """(key, value, model version) per row of the batch, whose key column `check_key_column`
    has passed."""
    has_version = MODEL_VERSION_COLUMN in batch.schema.names
    for row in batch.to_pylist():
        version = row[MODEL_VERSION_COLUMN] if has_version else None
        yield (
            message_key(row[key_column]),
            message_value(row),
            None if version is None else str(version),
        )


@dataclass
class _Tally:
    """Delivery reports as they arrive (on the producer's poll, in this thread)."""

    delivered: Counter[int] = field(default_factory=Counter)
    failed: int = 0
    first_error: str | None = None
    broker_error: str | None = None  # the last client-wide error: why messages time out
    fatal: str | None = None

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered[msg.partition() or 0] += 1
            return
        self.failed += 1
        if self.first_error is None:
            self.first_error = err.str()

    def on_error(self, err: KafkaError) -> None:
        self.broker_error = err.str()
        if err.fatal():
            self.fatal = err.str()

    @property
    def stop(self) -> bool:
        return self.failed > 0 or self.fatal is not None


def produce_partition(
    spec: KafkaSinkSpec,
    settings: Mapping[str, Any],
    batches: Iterable[pa.RecordBatch],
    *,
    pipeline: str,
    partition: str,
    run_id: str,
) -> KafkaDelivery:
    """Produce every row of the batches to `spec.topic`, then wait for every acknowledgement.

    `settings` are the spec's settings with the secrets of `settings_env` merged in. The batches
    are read one at a time as the local queue drains, so memory stays bounded. Raises
    KafkaSinkError naming the pipeline, partition, topic, how many messages were not delivered
    and the first error, if any message is not acknowledged within `spec.flush_seconds` (the
    production stops at the first failure); ValueError for settings librdkafka refuses or a row
    without a key. Errors never carry a secret setting's value."""
    secrets = [
        str(v)
        for k, v in settings.items()
        if k in spec.settings_env or _SECRET_SETTING.search(k)
        if str(v)
    ]

    def redact(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    where = f"pipeline {pipeline!r}, partition {partition}, Kafka topic {spec.topic!r}"
    tally = _Tally()
    config = producer_config(spec, settings, logger)
    config.update(on_delivery=tally.on_delivery, error_cb=tally.on_error)
    try:
        producer = Producer(config)
    except (KafkaException, ValueError, TypeError) as err:
        raise ValueError(redact(f"{where}: producer settings refused: {err}")) from None

    def failure(what: str) -> KafkaSinkError:
        broker = f" (last client error: {tally.broker_error})" if tally.broker_error else ""
        return KafkaSinkError(redact(f"{where}: {what}{broker}"))

    headers = _Headers(pipeline, partition, run_id)
    produced = 0
    try:
        _check_topic(producer, spec, failure)
        for batch in batches:
            try:
                check_key_column(batch, spec.key)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            for key, value, version in batch_messages(batch, spec.key):
                if not _produce(producer, spec.topic, key, value, headers.of(version), tally):
                    break
                produced += 1
                if produced % _POLL_EVERY == 0:
                    producer.poll(0)
            producer.poll(0)
            if tally.stop:
                break
        left = _flush(producer, spec.flush_seconds + _FLUSH_GRACE, tally)
    except KafkaException as err:  # produce() refused a message outright (too large, ...)
        producer.purge()
        producer.flush(0)
        raise failure(f"a message was refused: {err}") from None
    except BaseException:
        producer.purge()  # nothing more goes out, and the client closes at once
        producer.flush(0)
        raise
    if tally.stop or left:
        producer.purge()
        producer.flush(0)
        undelivered = produced - tally.delivered.total()
        first = tally.fatal or tally.first_error or f"not acknowledged in {spec.flush_seconds}s"
        stopped = ", stopped at the first failure" if tally.stop else ""
        raise failure(
            f"{undelivered} of {produced} messages not delivered{stopped}; first error: {first}"
        )
    return KafkaDelivery(
        messages=tally.delivered.total(), topic=spec.topic, partitions=dict(tally.delivered)
    )


class _Headers:
    """A message's headers: pipeline, partition, model_version (when the row has one), run_id;
    built once per model version."""

    def __init__(self, pipeline: str, partition: str, run_id: str) -> None:
        self._head = [("pipeline", pipeline.encode()), ("partition", partition.encode())]
        self._tail = [("run_id", run_id.encode())]
        self._by_version: dict[str | None, list[tuple[str, str | bytes | None]]] = {}

    def of(self, version: str | None) -> list[tuple[str, str | bytes | None]]:
        if version not in self._by_version:
            middle = [] if version is None else [("model_version", version.encode())]
            self._by_version[version] = [*self._head, *middle, *self._tail]
        return self._by_version[version]


def _flush(producer: Producer, timeout: float, tally: _Tally) -> int:
    """Wait for the acknowledgements; how many messages are still queued. Once one message has
    failed the partition fails: what is still queued is dropped then, not awaited."""
    deadline = time.monotonic() + timeout
    left = len(producer)
    while left and not tally.stop and (remaining := deadline - time.monotonic()) > 0:
        left = producer.flush(min(remaining, _FULL_QUEUE_WAIT))
    return left


def _check_topic(
    producer: Producer, spec: KafkaSinkSpec, failure: Callable[[str], KafkaSinkError]
) -> None:
    """Before any row is read: the cluster answers and knows the topic (fails in flush_seconds
    when it does not answer)."""
    try:
        metadata = producer.list_topics(spec.topic, timeout=spec.flush_seconds)
    except KafkaException as err:
        producer.poll(0)  # the client's own errors (connection refused, ...) say why
        raise failure(
            f"no answer from {spec.bootstrap_servers} in {spec.flush_seconds}s: {err}"
        ) from None
    topic = metadata.topics.get(spec.topic)
    if topic is None or topic.error is not None:
        cause = topic.error.str() if topic is not None and topic.error else "unknown topic"
        raise failure(f"the topic cannot be written: {cause}")


def _produce(
    producer: Producer,
    topic: str,
    key: bytes,
    value: bytes,
    headers: list[tuple[str, str | bytes | None]],
    tally: _Tally,
) -> bool:
    """Queue one message; while the local queue is full, serve delivery reports until it has
    room. False when a delivery has failed meanwhile (a broker that does not answer fails the
    queued messages at message.timeout.ms), so the partition stops there."""
    while not tally.stop:
        try:
            producer.produce(topic, value=value, key=key, headers=headers)
            return True
        except BufferError:
            producer.poll(_FULL_QUEUE_WAIT)
    return False
