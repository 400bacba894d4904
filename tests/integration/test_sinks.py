"""The sinks through Dagster: after publication, the partition's rows go on to a real
redis-server and a real Kafka-protocol broker; a sink that fails leaves the table published."""

import json
from typing import Any

import dagster as dg
import pytest
import redis

from batch_inference_assets import PipelineSpec, build_pipeline
from batch_inference_assets.sinks import redis_store
from batch_inference_assets.spec import RedisSinkSpec, SinkSpec
from tests.conftest import DAY, SEED_CUSTOMERS, Materialize, failure_message, read_table
from tests.servers_redis import redis_server

SINK = dg.AssetKey(["churn", "redis_sink"])


def with_sinks(spec: PipelineSpec, *sinks: dict[str, Any]) -> PipelineSpec:
    retries = spec.retries.model_copy(update={"max_retries": 0, "delay_seconds": 0})
    return spec.model_copy(
        update={"sinks": [SinkSpec.model_validate(s) for s in sinks], "retries": retries}
    )


def redis_sink(url: str) -> dict[str, Any]:
    return {"redis": {"url": url, "key": "churn:{customer_id}", "fields": ["score", "label"]}}


def metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_published_partition_is_served_from_redis(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    with redis_server() as url:
        spec = with_sinks(churn_spec, redis_sink(url))
        result = materialize(DAY, spec)
        assert result.success, failure_message(result)
        md = metadata(result, SINK)
        assert md["dagster/row_count"] == SEED_CUSTOMERS
        assert md["switched"] is True and md["serving"] == md["version"]
        table = read_table(resources).to_pylist()
        cfg = spec.sinks[0].redis
        assert isinstance(cfg, RedisSinkSpec)
        with redis.Redis.from_url(url) as client:
            served = {r["customer_id"]: redis_store.read_row(client, cfg, r) for r in table[::97]}
            assert client.dbsize() == SEED_CUSTOMERS + 1  # one hash per row, and the pointer
        assert served == {
            r["customer_id"]: {"score": repr(r["score"]), "label": str(r["label"])}
            for r in table[::97]
        }
        # The sink's own files (its export of the table) are gone once it has sent them.
        store = resources["object_store"]
        assert not store.path("churn", "redis_sink").exists() or not any(
            store.path("churn", "redis_sink").rglob("*.parquet")
        )


def test_a_redis_that_is_down_fails_the_sink_and_leaves_the_table_published(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    with redis_server() as url:
        pass  # a port where a server was and is no more
    spec = with_sinks(churn_spec, redis_sink(url))
    result = materialize(DAY, spec)
    assert not result.success
    message = failure_message(result)
    assert message.startswith(f"pipeline 'churn', partition {DAY}, redis_sink: ")
    assert "warehouse table is untouched" in message
    assert read_table(resources).num_rows == SEED_CUSTOMERS  # published before the sink ran
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed == {"churn__redis_sink"}

    # Once Redis is back, the sink alone sends the day (it reads the table, not the run).
    with redis_server() as back:
        spec = with_sinks(churn_spec, redis_sink(back))
        again = dg.materialize(
            build_pipeline(spec).assets, selection=[SINK], partition_key=DAY, resources=resources
        )
        assert again.success
        assert metadata(again, SINK)["dagster/row_count"] == SEED_CUSTOMERS
        with redis.Redis.from_url(back) as client:
            assert client.dbsize() == SEED_CUSTOMERS + 1


def test_a_sink_column_that_is_not_an_output_column_is_refused_at_load(
    churn_spec: PipelineSpec,
) -> None:
    with pytest.raises(ValueError, match=r"\['email'\] are not output columns"):
        PipelineSpec.model_validate(
            {
                **churn_spec.model_dump(),
                "sinks": [{"redis": {**redis_sink("redis://x")["redis"], "fields": ["email"]}}],
            }
        )


def test_the_readme_reader_snippet_reads_a_served_row(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    from tests.integration.test_readme import readme_block

    snippet = readme_block("**Redis: readers switch days at once.**")
    with redis_server() as url:
        assert materialize(DAY, with_sinks(churn_spec, redis_sink(url))).success
        first = read_table(resources).to_pylist()[0]
        scope: dict[str, Any] = {}
        # The README's own code, on this server and a customer this day has.
        exec(
            snippet.replace("redis://127.0.0.1:6379/0", url).replace(
                '"churn:42"', f'"churn:{first["customer_id"]}"'
            ),
            scope,
        )
        scope["client"].close()
    assert scope["row"] == {"score": repr(first["score"]), "label": str(first["label"])}


KAFKA_SINK = dg.AssetKey(["churn", "kafka_sink"])


def kafka_sink(bootstrap: str, topic: str) -> dict[str, Any]:
    return {"kafka": {"bootstrap_servers": bootstrap, "topic": topic, "key": "customer_id"}}


def test_the_published_partition_is_produced_to_kafka_and_a_rerun_wins_per_key(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    from tests.integration.test_readme import readme_block
    from tests.servers_kafka import consume_all, create_topic, kafka_broker

    with kafka_broker() as broker:
        servers = broker.bootstrap_servers
        create_topic(servers, "churn_predictions", partitions=3)
        spec = with_sinks(churn_spec, kafka_sink(servers, "churn_predictions"))
        first = materialize(DAY, spec)
        assert first.success, failure_message(first)
        assert metadata(first, KAFKA_SINK)["dagster/row_count"] == SEED_CUSTOMERS
        messages = consume_all(servers, "churn_predictions")
        assert len(messages) == SEED_CUSTOMERS
        table = {r["customer_id"]: r for r in read_table(resources).to_pylist()}
        for m in messages[::199]:
            row = json.loads(m.value or b"")
            assert m.key == str(row["customer_id"]).encode()
            assert row["score"] == table[row["customer_id"]]["score"]  # exact doubles
            assert m.headers == {
                "pipeline": b"churn",
                "partition": DAY.encode(),
                "model_version": table[row["customer_id"]]["model_version"].encode(),
                "run_id": first.run_id.encode(),
            }

        second = materialize(DAY, spec)  # the day again: every row is produced again
        assert second.success, failure_message(second)
        assert len(consume_all(servers, "churn_predictions")) == 2 * SEED_CUSTOMERS

        # The README's consumer, on this broker: the newest run's row per (id, day).
        snippet = readme_block("**Kafka: at least once, de-duplicated by the consumer.**")
        scope: dict[str, Any] = {}
        exec(
            snippet.replace("kafka-1:9092", servers).replace(
                'consumer.subscribe(["churn_predictions"])',
                "from confluent_kafka import TopicPartition\n"
                'consumer.assign([TopicPartition("churn_predictions", p, 0) for p in range(3)])',
            ),  # assigned, not subscribed: the test broker takes ~23 s to join a group
            scope,
        )
        rows = scope["rows"]
        assert len(rows) == SEED_CUSTOMERS
        assert {r["run_id"] for r in rows.values()} == {second.run_id}
        published = read_table(resources).to_pylist()
        assert {(str(r["customer_id"]), DAY): r["score"] for r in published} == {
            k: r["score"] for k, r in rows.items()
        }


def test_an_unreachable_broker_fails_the_sink_in_bounded_time(
    materialize: Materialize, resources: dict[str, Any], churn_spec: PipelineSpec
) -> None:
    with redis_server() as url:  # a port where a server was and is no more
        port = url.rsplit(":", 1)[1].split("/")[0]
    sink = kafka_sink(f"127.0.0.1:{port}", "churn_predictions")
    sink["kafka"]["flush_seconds"] = 3
    result = materialize(DAY, with_sinks(churn_spec, sink))
    assert not result.success
    message = failure_message(result)
    assert message.startswith(f"pipeline 'churn', partition {DAY}, kafka_sink: ")
    assert "churn_predictions" in message
    assert read_table(resources).num_rows == SEED_CUSTOMERS  # the table stays published
