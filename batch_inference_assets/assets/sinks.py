"""`<p>/redis_sink` and `<p>/kafka_sink`: the published partition's rows, sent on after publication.

Each reads the published table (deps on predictions), so it only ever carries what the
warehouse holds; a sink that fails leaves the table as published, and re-materializing the sink
alone (or the step's automatic retries, for a sink that could not be reached) sends the day
again.
"""

from typing import Any

import dagster as dg

from batch_inference_assets.assets.common import (
    daily,
    day,
    fail,
    key,
    stop_if_another_run_has_the_day,
)
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import Warehouse, WarehouseError
from batch_inference_assets.sinks import SinkError
from batch_inference_assets.spec import PipelineSpec, SinkSpec
from batch_inference_assets.stages.sinks import published_batches

KAFKA_BATCH_ROWS = 10_000


def sink_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    return [_sink_asset(spec, sink) for sink in spec.sinks]


def _secret(env_var: str, what: str) -> str:
    value = dg.EnvVar(env_var).get_value()
    if not value:
        raise ValueError(f"{what}: the environment variable {env_var} is not set")
    return value


def _send(
    spec: PipelineSpec, sink: SinkSpec, context: dg.AssetExecutionContext, rows: int, batches: Any
) -> dict[str, Any]:
    """Send the batches on; the metadata the materialization records."""
    partition, run_id = context.partition_key, context.run_id
    # Imported when a sink runs: the clients' imports stay out of every definitions load.
    if sink.redis is not None:
        from batch_inference_assets.sinks import redis_store

        cfg = sink.redis
        url = cfg.url or _secret(cfg.url_env or "", "redis url_env")
        load = redis_store.load_partition(
            cfg, url, batches, pipeline=spec.name, partition=partition, run_id=run_id
        )
        return {
            "dagster/row_count": load.keys,
            "version": load.version,
            "pointer": load.pointer,
            "previous_version": load.previous or "none",
            "serving": load.version if load.switched else (load.previous or "none"),
            "switched": load.switched,
        }
    from batch_inference_assets.sinks import kafka_topic

    assert sink.kafka is not None
    cfg_k = sink.kafka
    settings = {
        **cfg_k.settings,
        **{name: _secret(env, f"kafka {name}") for name, env in cfg_k.settings_env.items()},
    }
    done = kafka_topic.produce_partition(
        cfg_k, settings, batches, pipeline=spec.name, partition=partition, run_id=run_id
    )
    return {
        "dagster/row_count": done.messages,
        "topic": done.topic,
        "messages_per_partition": dg.MetadataValue.json(
            {str(p): n for p, n in sorted(done.partitions.items())}
        ),
    }


def _columns(spec: PipelineSpec, sink: SinkSpec) -> list[str]:
    if sink.kafka is not None:  # a message carries the whole row
        return spec.output_contract.names
    return sink.columns()


def _sink_asset(spec: PipelineSpec, sink: SinkSpec) -> dg.AssetsDefinition:
    stage = f"{sink.kind}_sink"
    if sink.redis is not None:
        where, batch_rows = f"the Redis keys {sink.redis.key!r}", sink.redis.batch_rows
    else:
        assert sink.kafka is not None
        where, batch_rows = f"the Kafka topic {sink.kafka.topic!r}", KAFKA_BATCH_ROWS

    @dg.asset(
        key=key(spec, stage),
        deps=[key(spec, "predictions")],  # reads the published table itself
        description=f"The published partition's rows in {where}, after each publication.",
        kinds={sink.kind},
        retry_policy=dg.RetryPolicy(
            max_retries=spec.retries.max_retries, delay=spec.retries.delay_seconds
        ),
        **daily(spec),
    )
    def send(
        context: dg.AssetExecutionContext, warehouse: Warehouse, object_store: ObjectStore
    ) -> dg.MaterializeResult:
        stop_if_another_run_has_the_day(spec, context, stage)
        try:
            with published_batches(
                spec, warehouse, object_store, day(context), context.run_id,
                stage=stage, columns=_columns(spec, sink), batch_rows=batch_rows,
            ) as (rows, batches):  # fmt: skip
                metadata = _send(spec, sink, context, rows, batches)
        except SinkError as err:
            # The sink could not take the rows (down, full, timed out): worth another attempt,
            # unless it said why not (refused credentials).
            retry = getattr(err, "retryable", True)
            raise fail(spec, context, stage, str(err), retryable=retry) from err
        except (WarehouseError, ValueError, OSError) as err:
            raise fail(spec, context, stage, str(err)) from err
        if metadata["dagster/row_count"] != rows:
            raise fail(
                spec, context, stage,
                f"{metadata['dagster/row_count']} of the {rows} published rows were sent",
            )  # fmt: skip
        return dg.MaterializeResult(metadata=metadata)

    return send
