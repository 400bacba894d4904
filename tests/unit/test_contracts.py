import pyarrow as pa
import pytest

from batch_inference_assets.contracts import Column, Contract


def test_violations_name_missing_and_mistyped_columns() -> None:
    c = Contract.of([Column("a", "float64"), Column("b", "string"), Column("c", "int64")])
    schema = pa.schema([("a", pa.string()), ("c", pa.int32())])
    assert c.violations(schema) == [
        "column 'a' has type string, expected float64",
        "missing column 'b' (expected string)",
    ]


def test_numeric_contract_accepts_ints_and_decimals() -> None:
    c = Contract.of([Column("a", "float64"), Column("b", "int64")])
    assert c.violations(pa.schema([("a", pa.int16()), ("b", pa.decimal128(38, 0))])) == []
    assert c.violations(pa.schema([("a", pa.float32()), ("b", pa.decimal128(10, 2))])) == [
        "column 'b' has type decimal128(10, 2), expected int64"
    ]


def test_ddl_per_dialect() -> None:
    c = Contract.of([Column("id", "int64", nullable=False), Column("ts", "timestamp")])
    assert c.create_table_sql("s.t", "duckdb") == (
        'CREATE TABLE IF NOT EXISTS "s"."t" (\n  "id" BIGINT NOT NULL,\n  "ts" TIMESTAMPTZ\n)'
    )
    assert "NUMBER(38,0) NOT NULL" in c.create_table_sql("t", "snowflake")


def test_contract_rejects_duplicates_and_bad_names() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Contract.of([Column("a", "int64"), Column("A", "int64")])
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        Column("a b", "int64")
