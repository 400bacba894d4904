"""`<p>/realized_performance`: a published partition against its late labels; its check."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from batch_inference_assets.assets import checks
from batch_inference_assets.assets.common import daily, day, fail, key, partitions
from batch_inference_assets.io.warehouse import Warehouse, WarehouseError
from batch_inference_assets.spec import LabelsSpec, PipelineSpec
from batch_inference_assets.stages import performance

STAGE = "realized_performance"


def monitoring_group(spec: PipelineSpec) -> str:
    return f"{spec.name}_monitoring"


def realized_performance_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    """Requested by `<p>_labels_sensor` once a day's labels have landed (not by `<p>_daily`)."""
    labels = spec.labels
    assert labels is not None  # built only for a spec with a labels section
    asset_key = key(spec, STAGE)
    kind = performance.metric_kind(spec.model.kind)

    @dg.asset(
        key=asset_key,
        deps=[key(spec, "predictions")],  # reads the published table itself
        check_specs=checks.specs(
            asset_key, [checks.REALIZED_PERFORMANCE_WITHIN_THRESHOLDS], partitions(spec)
        ),
        description=f"The published {kind} predictions of the day against the labels that "
        f"land {labels.delay_days} day(s) later, overall, per segment and per challenger.",
        # Its own group: "Materialize all" on the pipeline's group scores a day without
        # waiting for labels that land weeks later.
        **{**daily(spec), "group_name": monitoring_group(spec)},
    )
    def realized_performance(
        context: dg.AssetExecutionContext, warehouse: Warehouse
    ) -> Iterator[Any]:
        window = context.partition_time_window
        try:
            landed = performance.check_landed(spec, warehouse, day(context), window)
            result = performance.realized_performance(spec, warehouse, day(context), window)
        except (WarehouseError, ValueError) as err:
            raise fail(spec, context, STAGE, str(err)) from err
        metadata: dict[str, Any] = {
            **performance.metadata_values(result),
            "landed_labels": landed,
        }
        if result.reliability:
            metadata["reliability"] = dg.MetadataValue.md(
                performance.reliability_markdown(result.reliability)
            )
        yield dg.MaterializeResult(metadata=metadata)
        yield evaluate_thresholds(labels, result.overall)

    return realized_performance


def evaluate_thresholds(labels: LabelsSpec, overall: performance.Metrics) -> dg.AssetCheckResult:
    compared = performance.compare_with_thresholds(labels, overall)
    description = (
        "; ".join(c.describe() for c in compared) if compared else "no thresholds set in labels"
    )
    return dg.AssetCheckResult(
        check_name=checks.REALIZED_PERFORMANCE_WITHIN_THRESHOLDS,
        passed=all(c.passed for c in compared),
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={"compared": ", ".join(c.metric for c in compared) or "none"},
    )
