"""An IO manager that hands downstream assets a published partition's rows as a DataFrame."""

from datetime import date

import dagster as dg
import pandas as pd
from pydantic import Field

from batch_inference_assets.io.warehouse import Warehouse
from batch_inference_assets.records import PublishedPartition

TABLE_NAME = "dagster/table_name"


class PredictionsIOManager(dg.ConfigurableIOManager):
    """For `<pipeline>/predictions`. Its asset publishes the partition itself, in one gated
    transaction, so storing its output writes nothing. Loading it reads the input's partitions
    (several mapped: concatenated) from the table named by the asset's `dagster/table_name`
    metadata."""

    warehouse: dg.ResourceDependency[Warehouse]
    partition_column: str = Field(
        default="partition_date", description="The published table's partition column."
    )

    def handle_output(self, context: dg.OutputContext, obj: PublishedPartition) -> None:
        if not isinstance(obj, PublishedPartition):
            raise TypeError(
                f"{context.asset_key.to_user_string()}: the predictions IO manager takes the "
                f"PublishedPartition record of a publication, not {type(obj).__name__}"
            )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        upstream = context.upstream_output
        asset = context.asset_key.to_user_string()
        table = (upstream.definition_metadata if upstream else {}).get(TABLE_NAME)
        if not isinstance(table, str) or not table:
            raise dg.DagsterInvariantViolationError(
                f"{asset} has no {TABLE_NAME!r} metadata: the predictions IO manager reads the "
                "table it names"
            )
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        if not keys:
            raise dg.DagsterInvariantViolationError(
                f"{asset} is read one partition at a time; no partition maps to this input"
            )
        frames = [
            self.warehouse.read_partition(table, self.partition_column, _value(key)) for key in keys
        ]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _value(partition_key: str) -> date | str:
    """Daily partition keys compare with the table's DATE column as dates."""
    try:
        return date.fromisoformat(partition_key)
    except ValueError:
        return partition_key
