"""Typed column contracts, declared once: they drive schema checks, DDL and Dagster metadata."""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import dagster as dg
import pyarrow as pa
import pyarrow.types as pat

ColumnType = Literal["int64", "float64", "string", "bool", "date", "timestamp"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ARROW_TYPES: dict[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

SQL_TYPES: dict[str, dict[str, str]] = {
    "duckdb": {
        "int64": "BIGINT",
        "float64": "DOUBLE",
        "string": "VARCHAR",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMPTZ",
    },
    "snowflake": {
        "int64": "NUMBER(38,0)",
        "float64": "FLOAT",
        "string": "VARCHAR",
        "bool": "BOOLEAN",
        "date": "DATE",
        "timestamp": "TIMESTAMP_TZ",
    },
}


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return `name` if it is a plain SQL identifier (optionally dotted), else raise ValueError."""
    parts = name.split(".")
    if not name or not all(_IDENTIFIER.fullmatch(p) for p in parts):
        raise ValueError(
            f"{what} {name!r} is not a plain SQL identifier "
            "(letters, digits and underscores, not starting with a digit)"
        )
    return name


def quote_identifier(name: str) -> str:
    """Quote a validated (possibly dotted) identifier (DuckDB: exact, case-insensitive)."""
    return ".".join(f'"{p}"' for p in validate_identifier(name).split("."))


def sql_identifier(name: str, dialect: str) -> str:
    """A validated identifier as written in `dialect`.

    Snowflake gets it unquoted: it folds to upper case, so the table stays queryable without
    quotes; validation already rules out anything that would need them.
    """
    return validate_identifier(name) if dialect == "snowflake" else quote_identifier(name)


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        validate_identifier(self.name, "column name")
        if self.type not in ARROW_TYPES:
            raise ValueError(f"column {self.name!r}: unknown type {self.type!r}")


def arrow_type_matches(declared: ColumnType, actual: pa.DataType) -> bool:
    """Whether a Parquet/Arrow column of type `actual` can feed a column declared `declared`."""
    if pat.is_dictionary(actual):
        actual = actual.value_type
    if declared == "float64":
        return pat.is_integer(actual) or pat.is_floating(actual) or pat.is_decimal(actual)
    if declared == "int64":
        return pat.is_integer(actual) or (pat.is_decimal(actual) and actual.scale == 0)
    if declared == "string":
        return pat.is_string(actual) or pat.is_large_string(actual)
    if declared == "bool":
        return pat.is_boolean(actual)
    if declared == "date":
        return pat.is_date(actual)
    if declared == "timestamp":
        return pat.is_timestamp(actual)
    return False


@dataclass(frozen=True)
class Contract:
    """An ordered set of typed columns: a feature contract or an output table contract."""

    columns: tuple[Column, ...]

    @classmethod
    def of(cls, columns: Iterable[Column]) -> "Contract":
        cols = tuple(columns)
        names = [c.name.lower() for c in cols]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column names in contract: {dupes}")
        return cls(cols)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable) for c in self.columns]
        )

    def table_schema(self) -> dg.TableSchema:
        return dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=c.name,
                    type=c.type,
                    description=c.description or None,
                    constraints=dg.TableColumnConstraints(nullable=c.nullable),
                )
                for c in self.columns
            ]
        )

    def create_table_sql(self, table: str, dialect: str) -> str:
        return self.table_ddl(table, dialect, "CREATE TABLE IF NOT EXISTS")

    def table_ddl(self, table: str, dialect: str, verb: str) -> str:
        types = SQL_TYPES[dialect]
        cols = ",\n  ".join(
            f"{sql_identifier(c.name, dialect)} {types[c.type]}{'' if c.nullable else ' NOT NULL'}"
            for c in self.columns
        )
        return f"{verb} {sql_identifier(table, dialect)} (\n  {cols}\n)"

    def violations(self, schema: pa.Schema) -> list[str]:
        """Human-readable reasons why an Arrow schema does not satisfy this contract."""
        problems: list[str] = []
        present = {f.name: f.type for f in schema}
        for c in self.columns:
            if c.name not in present:
                problems.append(f"missing column {c.name!r} (expected {c.type})")
            elif not arrow_type_matches(c.type, present[c.name]):
                problems.append(f"column {c.name!r} has type {present[c.name]}, expected {c.type}")
        return problems


def arrow_schema_to_table_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])
