"""The warehouse role: export a query as Parquet files; replace a table partition atomically;
read a partition back."""

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
from upath import UPath

from batch_inference_assets.contracts import ColumnType, Contract, sql_identifier
from batch_inference_assets.io.object_store import ObjectStore


class WarehouseError(RuntimeError):
    pass


@dataclass(frozen=True)
class QueryTag:
    """Attached to every statement (Snowflake QUERY_TAG) so cost traces back to a run."""

    pipeline: str
    partition: str
    run_id: str
    stage: str

    def as_json(self) -> str:
        return json.dumps(
            {
                "app": "batch-inference",
                "pipeline": self.pipeline,
                "partition": self.partition,
                "run_id": self.run_id,
                "stage": self.stage,
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True)
class StagedStats:
    """Aggregates over the rows staged for publication, computed inside the transaction."""

    rows: int
    null_scores: int
    min_score: float | None
    max_score: float | None
    duplicate_ids: int
    other_partitions: int
    foreign_runs: int = 0  # rows whose run_id is none of the request's run_ids
    other_versions: int = 0  # rows whose model_version is not the request's model_version


@dataclass(frozen=True)
class PublishRequest:
    table: str
    contract: Contract
    partition_column: str
    partition_value: date
    files: Sequence[str]
    mode: str
    id_columns: Sequence[str]
    score_column: str
    tag: QueryTag
    # Provenance the gates hold the staged rows to (empty: not checked): the runs whose
    # scores may be published (this run and the run it re-executes) and the model version.
    run_ids: tuple[str, ...] = ()
    model_version: str | None = None
    # Several allowed versions instead (the shadow table holds each challenger's rows).
    model_versions: tuple[str, ...] = ()
    run_id_column: str = "run_id"
    model_version_column: str = "model_version"

    def staged_stats_params(self) -> list[Any]:
        """The values `staged_stats_sql` binds, in order."""
        versions = list(self.allowed_versions)
        return [self.partition_value, *self.run_ids, *versions]

    def staged_stats_sql(self, stage: str, dialect: str) -> str:
        """One query over the staged rows; binds `staged_stats_params()`."""

        def q(name: str) -> str:
            return sql_identifier(name, dialect)

        ids = ", ".join(q(c) for c in self.id_columns)
        score, part = q(self.score_column), q(self.partition_column)
        return (
            f"SELECT COUNT(*), COUNT(*) - COUNT({score}), MIN({score}), MAX({score}), "
            f"(SELECT COUNT(*) FROM (SELECT {ids} FROM {stage} GROUP BY {ids} "
            "HAVING COUNT(*) > 1) AS dupes), "
            f"COALESCE(SUM(CASE WHEN {part} = ? THEN 0 ELSE 1 END), 0), "
            f"{self._count_other(q(self.run_id_column), len(self.run_ids))}, "
            f"{self._count_other(q(self.model_version_column), len(self.allowed_versions))} "
            f"FROM {stage}"
        )

    @property
    def allowed_versions(self) -> tuple[str, ...]:
        return self.model_versions or ((self.model_version,) if self.model_version else ())

    @staticmethod
    def _count_other(column: str, allowed: int) -> str:
        """Rows whose `column` is none of `allowed` bound values (0 when none are given)."""
        if not allowed:
            return "0"
        values = ", ".join("?" * allowed)
        return f"COALESCE(SUM(CASE WHEN {column} IN ({values}) THEN 0 ELSE 1 END), 0)"

    def column_list(self, dialect: str) -> str:
        return ", ".join(sql_identifier(c, dialect) for c in self.contract.names)


@dataclass(frozen=True)
class DeclaredColumn:
    """A column as the table declares it; `type` None for a type our contracts never write."""

    name: str
    type: ColumnType | None
    nullable: bool


def with_declared_types(frame: pd.DataFrame, columns: Sequence[DeclaredColumn]) -> pd.DataFrame:
    """A driver's frame with the table's (lower-case) column names and one dtype per declared
    type, so a partition reads the same from every warehouse, empty or not, nulls or not."""
    by_name = {str(c).lower(): c for c in frame.columns}
    return pd.DataFrame(
        {c.name: _as_declared(frame[by_name[c.name.lower()]], c) for c in columns},
        index=pd.RangeIndex(len(frame)),
    )


def _as_declared(values: pd.Series, column: DeclaredColumn) -> pd.Series:
    values = values.reset_index(drop=True)
    if column.type == "int64":
        return values.astype("Int64" if column.nullable else "int64")
    if column.type == "bool":
        return values.astype("boolean" if column.nullable else "bool")
    if column.type == "float64":
        return values.astype("float64")
    if column.type == "string":
        return values.astype(object).where(values.notna(), None)
    if column.type == "date":  # pandas has no date dtype: midnight, like DuckDB's own frames
        return pd.to_datetime(values).astype("datetime64[ns]")
    if column.type == "timestamp":
        return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")
    return values


class StagedPublication(ABC):
    """Rows staged for one partition and not yet visible: `commit()` makes them the partition's,
    `rollback()` discards them. Leaving the warehouse's `stage_publication` block without a
    commit rolls back, and the staged rows are dropped either way."""

    def __init__(self, table: str, stats: StagedStats) -> None:
        self.table = table
        self.stats = stats
        self._state = "staged"

    @property
    def state(self) -> str:
        """staged, committed or rolled back."""
        return self._state

    def commit(self) -> None:
        """Replace (or append to) the partition with the staged rows, in one transaction."""
        if self._state != "staged":
            raise WarehouseError(f"cannot commit the publication to {self.table}: {self._state}")
        self._commit()
        self._state = "committed"

    def rollback(self) -> None:
        """Discard the staged rows; the table stays as it was. Does nothing once decided."""
        if self._state == "staged":
            self._state = "rolled back"
            self._rollback()

    @abstractmethod
    def _commit(self) -> None:
        """Swap the rows in; on failure, leave the table as it was and raise WarehouseError."""

    @abstractmethod
    def _rollback(self) -> None: ...


class Warehouse(dg.ConfigurableResource, ABC):
    """Runs feature queries and owns the published tables."""

    @property
    @abstractmethod
    def dialect(self) -> str: ...

    @property
    @abstractmethod
    def feature_schema(self) -> str:
        """What `{schema}` in feature SQL resolves to for this deployment."""

    @abstractmethod
    def export_query(
        self,
        sql: str,
        params: Sequence[Any],
        object_store: ObjectStore,
        folder: str,
        *,
        max_file_bytes: int,
        row_group_rows: int,
        tag: QueryTag,
    ) -> list[UPath]:
        """Run `sql`; write its rows as Parquet files in the store's (empty) `folder`."""

    @abstractmethod
    def stage_publication(
        self, request: PublishRequest, object_store: ObjectStore
    ) -> AbstractContextManager[StagedPublication]:
        """Stage the files and compute their stats; the caller commits or rolls back.

        `with warehouse.stage_publication(request, store) as staged:` then `staged.commit()`
        if `staged.stats` pass the gates. Nothing is deleted until the commit, an exception in
        the block rolls back, and the staged rows are dropped when the block ends.
        """

    @abstractmethod
    def read_partition(self, table: str, partition_column: str, value: Any) -> pd.DataFrame:
        """The rows of `table` (in the output schema) where `partition_column` = `value`, with
        the table's declared column types (see `with_declared_types`)."""

    @abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        """Run a small read query (checks, tests, operators)."""

    @abstractmethod
    def published_table(self, table: str) -> str | None:
        """The qualified, quoted name of a published table; None while it does not exist."""
