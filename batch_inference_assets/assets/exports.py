"""`<p>/exports` and `<p>/top_k`: files of the published partition in the object store."""

import dagster as dg

from batch_inference_assets.assets.common import (
    RECORDS_IO_MANAGER,
    daily,
    day,
    fail,
    key,
    stop_if_another_run_has_the_day,
)
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import Warehouse, WarehouseError
from batch_inference_assets.records import ExportedPredictions
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import exports


def export_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    """What the spec's `exports` section asks for: none, either or both."""
    out = []
    if spec.exports.formats:
        out.append(_export_asset(spec, "exports", [*spec.exports.formats], "Parquet/CSV files"))
    if spec.exports.top_k:
        top = spec.exports.top_k
        formats: list[str] = [*spec.exports.formats] or ["parquet"]
        out.append(_export_asset(spec, "top_k", formats, f"The top {top.k:,} rows by {top.by}"))
    return out


def _export_asset(
    spec: PipelineSpec, stage: str, formats: list[str], what: str
) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, stage),
        deps=[key(spec, "predictions")],  # reads the published table itself
        description=f"{what} of the published partition in the object store ({formats}).",
        kinds=set(formats),
        io_manager_key=RECORDS_IO_MANAGER,
        **daily(spec),
    )
    def export(
        context: dg.AssetExecutionContext, warehouse: Warehouse, object_store: ObjectStore
    ) -> dg.Output[ExportedPredictions]:
        stop_if_another_run_has_the_day(spec, context, stage)  # the day's files are shared
        try:
            done = exports.export_partition(
                spec, warehouse, object_store, day(context), context.run_id,
                stage=stage, formats=formats,
            )  # fmt: skip
        except (WarehouseError, ValueError, OSError) as err:
            raise fail(spec, context, stage, str(err)) from err
        return dg.Output(
            done,
            metadata={
                "dagster/row_count": done.rows,
                **{f"{fmt}_files": len(paths) for fmt, paths in done.files.items()},
                "path": str(object_store.path(spec.name, stage, context.partition_key)),
            },
        )

    return export
