"""`<p>/source_features`: the warehouse exports the partition as Parquet; its checks."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pyarrow as pa

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
from batch_inference_assets.contracts import arrow_schema_to_table_schema
from batch_inference_assets.io.object_store import ObjectStore
from batch_inference_assets.io.warehouse import Warehouse, WarehouseError
from batch_inference_assets.records import ModelHandle
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.stages import features


def source_features_asset(spec: PipelineSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=key(spec, "source_features"),
        ins={"model": dg.AssetIn(key(spec, "model"))},
        check_specs=checks.specs(
            key(spec, "source_features"), checks.SOURCE_CHECKS, partitions(spec)
        ),
        description="The partition's feature rows, exported by the warehouse as Parquet files.",
        kinds={"parquet"},
        io_manager_key=RECORDS_IO_MANAGER,
        **daily(spec),
    )
    def source_features(
        context: dg.AssetExecutionContext,
        warehouse: Warehouse,
        object_store: ObjectStore,
        model: ModelHandle,
    ) -> Iterator[Any]:
        stop_if_another_run_has_the_day(spec, context, "source_features")
        window = context.partition_time_window
        try:
            export = features.export_features(
                spec, warehouse, object_store, day(context), (window.start, window.end),
                context.run_id,
            )  # fmt: skip
        except WarehouseError as err:
            raise fail(spec, context, "source_features", str(err)) from err
        schema = features.export_schema(export, object_store)
        problems = checks.contract_problems(spec, model, schema) if schema is not None else []
        profile = None
        if schema is not None and not problems:
            profile = features.profile_export(
                export, spec.features.id_columns, model.features, object_store
            )
        published = 0
        if spec.output.mode == "incremental" and export.rows == 0:
            published = features.published_rows(spec, warehouse, day(context))
        if published:  # incremental, nothing new: every id of the day is already scored
            results = checks.nothing_new(export, published)
        else:
            results = checks.evaluate_source_features(
                spec, export, model, schema, problems, profile
            )
        results.append(checks.evaluate_row_limit(spec, export))
        yield dg.Output(
            export,
            metadata={
                "dagster/row_count": export.rows,
                "dagster/column_schema": arrow_schema_to_table_schema(schema or pa.schema([])),
                "bytes": export.bytes,
                "files": len(export.files),
                "query_seconds": export.query_seconds,
                "path": str(
                    object_store.path(spec.name, "features", context.partition_key, context.run_id)
                ),
            },
        )
        yield from results
        failures = checks.blocking_failures(results)
        if failures:
            raise fail(spec, context, "source_features", "; ".join(failures))

    return source_features
