"""`<p>/drift_stats`: drift of the score and each feature vs training and the previous day,
per segment, with its HTML report."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import duckdb

from batch_inference_assets.assets import checks
from batch_inference_assets.assets.common import (
    daily,
    day,
    fail,
    key,
    partitions,
    stop_if_another_run_has_the_day,
)
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.records import FeatureExport, ModelHandle, ScoredShards
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import drift, drift_profile, drift_report


def drift_stats_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "drift_stats"),
        ins={
            "scored": dg.AssetIn(key(spec, "scored_shards")),
            "model": dg.AssetIn(key(spec, "model")),
            "export": dg.AssetIn(key(spec, "source_features")),  # scanned for features, segments
        },
        deps=[key(spec, "predictions")],  # only what was published is measured
        check_specs=checks.specs(key(spec, "drift_stats"), checks.DRIFT_CHECKS, partitions(spec)),
        description="PSI, Jensen-Shannon distance and KS of the score and each feature, and their "
        "missing and unseen rates, vs training and the previous partition; per segment with "
        "drift.segment_by, and an HTML report with drift.report.",
        **daily(spec),
    )
    def drift_stats(
        context: dg.AssetExecutionContext,
        object_store: ObjectStore,
        scored: ScoredShards,
        model: ModelHandle,
        export: FeatureExport,
    ) -> Iterator[Any]:
        stop_if_another_run_has_the_day(spec, context, "drift_stats")  # drift/<day>.json is shared
        if scored.rows == 0:  # incremental mode, nothing new: no distribution to compare
            yield dg.MaterializeResult(metadata={"rows": 0, "note": "nothing new was scored"})
            yield from checks.drift_not_evaluated("nothing new was scored")
            return
        segments = spec.drift.segment_by
        try:
            profile = drift_profile.scan_partition(
                model, export, scored, segments, spec.drift.max_segments, object_store
            )
        except (FileNotFoundError, duckdb.IOException) as err:  # e.g. removed by retention
            cause = (
                f"cannot read the partition's exported or scored files ({err}); they may have "
                "outlived retention: materialize the whole day again"
            )
            raise fail(spec, context, "drift_stats", cause) from err
        report, previous_key = drift.compare_with_previous(
            object_store, spec.name, day(context), spec.start_date, model, profile
        )
        warn, error = spec.checks.psi_warn, spec.checks.psi_error
        # What a person reads first, then the hundreds of numbers the UI plots.
        metadata: dict[str, Any] = {
            "summary": dg.MetadataValue.md(drift.summary_markdown(report, warn, error)),
            "previous_partition": previous_key or "none",
        }
        if (segment_table := drift.segments_markdown(report)) is not None:
            metadata["segments"] = dg.MetadataValue.md(segment_table)
        if (worst := drift.worst_segment(report)) is not None:
            metadata["worst_segment"] = worst
        if spec.drift.report:
            page = drift_report.render_report(
                report, model, spec.name, context.partition_key, previous_key, warn, error
            )
            path = drift_report.write_report(object_store, spec.name, context.partition_key, page)
            metadata["report"] = dg.MetadataValue.path(str(path))
        profile_file = drift.profile_path(object_store, spec.name, context.partition_key)
        metadata["profile"] = str(profile_file)
        metadata.update(drift.metric_metadata(report))
        yield dg.MaterializeResult(metadata=metadata)
        yield from checks.evaluate_drift(spec, report.psi_reference)

    return drift_stats
