"""`<p>/shadow_predictions` and `<p>/challenger_comparison`: the challengers' scores of the
champion's rows, published to `<table>_shadow` behind the same gates, then compared."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from batch_inference_assets.assets import checks
from batch_inference_assets.assets.common import (
    RECORDS_IO_MANAGER,
    daily,
    day,
    fail,
    key,
    partitions,
    stop_if_another_run_has_the_day,
)
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import Warehouse, WarehouseError
from batch_inference_assets.records import PublishedPartition, ScoredShards
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import challengers, publish


def challenger_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    return [_shadow_asset(spec), _comparison_asset(spec)] if spec.challengers else []


def _shadow_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    table = publish.shadow_table(spec)
    gates = publish.blocking_checks(spec.model.is_classifier)

    @dg.asset(
        key=key(spec, "shadow_predictions"),
        ins={"scored": dg.AssetIn(key(spec, "scored_shards"))},
        check_specs=checks.specs(key(spec, "shadow_predictions"), gates, partitions(spec)),
        description=f"The challengers' scores of the champion's rows, published to {table} "
        "(one row per id and challenger version), the partition replaced atomically.",
        metadata={"dagster/table_name": table},
        kinds={"table"},
        io_manager_key=RECORDS_IO_MANAGER,
        **daily(spec),
    )
    def shadow_predictions(
        context: dg.AssetExecutionContext,
        warehouse: Warehouse,
        object_store: ObjectStore,
        scored: ScoredShards,
    ) -> Iterator[Any]:
        stop_if_another_run_has_the_day(spec, context, "shadow_predictions")
        versions = scored.challenger_versions
        if not versions:
            raise fail(
                spec, context, "shadow_predictions",
                "the scored shards carry no challenger scores (scored before the challengers "
                "were added?): run the day's scoring again",
            )  # fmt: skip
        staged, results = yield from checks.gated(
            spec, context, "shadow_predictions",
            lambda: publish.publish_shadow(
                spec, warehouse, object_store, scored, day(context), context.run_id
            ),
        )  # fmt: skip
        yield dg.Output(
            PublishedPartition(
                pipeline=spec.name,
                partition=context.partition_key,
                table=table,
                rows=staged.rows,
                mode="replace_partition",
            ),
            metadata={
                "dagster/row_count": staged.rows,
                "challengers": ", ".join(f"{ref}@{v}" for v, ref in versions.items()),
            },
        )
        yield from checks.gate_results(results)

    return shadow_predictions


def _comparison_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "challenger_comparison"),
        ins={"scored": dg.AssetIn(key(spec, "scored_shards"))},
        deps=[key(spec, "predictions"), key(spec, "shadow_predictions")],
        check_specs=checks.specs(
            key(spec, "challenger_comparison"),
            [checks.CHALLENGER_SCORED_THE_SAME_ROWS],
            partitions(spec),
        ),
        description="Champion vs each challenger on the day's published rows: PSI between "
        "their score distributions, Spearman rank correlation, top-K overlap, the share of rows "
        "whose label flips; per segment with drift.segment_by.",
        **daily(spec),
    )
    def challenger_comparison(
        context: dg.AssetExecutionContext, warehouse: Warehouse, scored: ScoredShards
    ) -> Iterator[Any]:
        try:
            found = challengers.compare(spec, warehouse, scored, day(context))
        except (WarehouseError, ValueError) as err:
            raise fail(spec, context, "challenger_comparison", str(err)) from err
        yield dg.MaterializeResult(
            metadata={
                "summary": dg.MetadataValue.md(challengers.summary_markdown(found)),
                "same_rows": dg.MetadataValue.json({c.version: c.same_rows for c in found}),
                **challengers.metadata(found),
            }
        )
        different = [c for c in found if not c.same_rows]
        yield dg.AssetCheckResult(
            check_name=checks.CHALLENGER_SCORED_THE_SAME_ROWS,
            passed=not different,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(
                f"{c.ref}@{c.version}: {c.challenger_rows} shadow rows, {c.champion_rows} "
                f"champion rows, {c.matched_rows} matched"
                for c in different
            )
            or f"{len(found)} challenger(s) on the same {scored.rows:,} rows",
        )

    return challenger_comparison
