"""`<p>/drift_stats`: PSI of the score and each feature vs training and the previous day."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from batch_inference_assets.assets import checks
from batch_inference_assets.assets.common import (
    daily,
    day,
    key,
    partitions,
    stop_if_another_run_has_the_day,
)
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.records import ModelHandle, ScoredShards
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import drift


def drift_stats_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "drift_stats"),
        ins={
            "scored": dg.AssetIn(key(spec, "scored_shards")),
            "model": dg.AssetIn(key(spec, "model")),
        },
        deps=[key(spec, "predictions")],  # only what was published is measured
        check_specs=checks.specs(key(spec, "drift_stats"), checks.DRIFT_CHECKS, partitions(spec)),
        description="PSI of the score and each feature vs training and the previous partition.",
        **daily(spec),
    )
    def drift_stats(
        context: dg.AssetExecutionContext,
        object_store: ObjectStore,
        scored: ScoredShards,
        model: ModelHandle,
    ) -> Iterator[Any]:
        stop_if_another_run_has_the_day(spec, context, "drift_stats")  # drift/<day>.json is shared
        if scored.rows == 0:  # incremental mode, nothing new: no distribution to compare
            yield dg.MaterializeResult(metadata={"rows": 0, "note": "nothing new was scored"})
            yield from checks.drift_not_evaluated("nothing new was scored")
            return
        report, previous_key = drift.compare_with_previous(
            object_store, spec.name, day(context), spec.start_date, model, scored
        )
        yield dg.MaterializeResult(
            metadata={
                "summary": dg.MetadataValue.md(
                    drift.summary_markdown(report, spec.checks.psi_warn, spec.checks.psi_error)
                ),
                **drift.psi_metadata(report),
                "previous_partition": previous_key or "none",
                "profile": str(drift.profile_path(object_store, spec.name, context.partition_key)),
            }
        )
        yield from checks.evaluate_drift(spec, report.psi_reference)

    return drift_stats
