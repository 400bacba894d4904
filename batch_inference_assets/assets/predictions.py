"""`<p>/predictions`: the partition published in one gated transaction; its checks."""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from batch_inference_assets import progress
from batch_inference_assets.assets import checks
from batch_inference_assets.assets.common import (
    PREDICTIONS_IO_MANAGER,
    daily,
    day,
    key,
    partitions,
    stop_if_another_run_has_the_day,
)
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import Warehouse
from batch_inference_assets.records import PublishedPartition, ScoredShards
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import publish


def predictions_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    table = spec.output.table

    @dg.asset(
        key=key(spec, "predictions"),
        ins={"scored": dg.AssetIn(key(spec, "scored_shards"))},
        check_specs=checks.specs(
            key(spec, "predictions"), checks.prediction_checks(spec), partitions(spec)
        ),
        description=f"Predictions published to {table}, one partition replaced atomically. "
        "An asset that takes it as an input receives the partition's rows as a DataFrame.",
        metadata={"dagster/table_name": table},
        kinds={"table"},
        io_manager_key=PREDICTIONS_IO_MANAGER,
        **daily(spec),
    )
    def predictions(
        context: dg.AssetExecutionContext,
        warehouse: Warehouse,
        object_store: ObjectStore,
        cost_model: progress.CostModel,
        scored: ScoredShards,
    ) -> Iterator[Any]:
        started = time.perf_counter()
        stop_if_another_run_has_the_day(spec, context, "predictions")
        staged, gates = yield from checks.gated(
            spec, context, "predictions",
            lambda: publish.publish_partition(
                spec, warehouse, object_store, scored, day(context), context.run_id
            ),
        )  # fmt: skip
        cost = publish.cost_metadata(
            scored, time.perf_counter() - started, cost_model.estimate, cost_model.currency
        )
        published = PublishedPartition(
            pipeline=spec.name,
            partition=context.partition_key,
            table=table,
            rows=staged.rows,
            mode=spec.output.mode,
        )
        yield dg.Output(
            published,
            metadata={
                "dagster/row_count": staged.rows,
                "dagster/table_name": table,
                "dagster/column_schema": spec.output_contract.table_schema(),
                "mode": spec.output.mode,
                "model_version": scored.model_version,
                **publish.score_metadata(scored, spec.model.kind),
                **cost,
            },
        )
        yield from checks.gate_results(gates)
        yield from checks.evaluate_prediction_bounds(spec, scored)

    return predictions
