"""Feature SQL that smuggles in more statements: `dg check defs` refuses it with its file and
line, and each warehouse runs one statement only, even when handed more directly."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batch_inference_assets.io.object_store import LocalObjectStore
from batch_inference_assets.io.warehouse import QueryTag, Warehouse, WarehouseError
from tests.unit.test_sql_is_one_select import ATTACK

REPO = Path(__file__).parents[2]
DG = Path(sys.executable).parent / "dg"
TAG = QueryTag("churn", "2026-10-15", "run-1", "source_features")


def _dg_check_defs(project: Path) -> str:
    result = subprocess.run(
        [str(DG), "check", "defs"],
        cwd=project,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    return out


@pytest.mark.slow
def test_dg_check_defs_refuses_the_attack_with_file_and_line(project: Path) -> None:
    churn = project / "dagster_defs" / "defs" / "pipelines" / "churn"
    defs_yaml = churn / "defs.yaml"
    text = defs_yaml.read_text()
    features = next(i for i, s in enumerate(text.splitlines(), 1) if s.strip() == "features:")
    refused = "must be exactly one SELECT (WITH ... SELECT allowed) as both DuckDB and Snowflake"
    statements = "3 statements (SELECT, DROP, COPY)"

    # In the pipeline's features.sql: read when the component loads, reported at `features`.
    (churn / "features.sql").write_text(ATTACK)
    out = _dg_check_defs(project)
    assert f"invalid pipeline spec {defs_yaml}:" in out, out
    assert f"features.sql: Value error, {refused}" in out and statements in out
    assert f"(line {features})" in out

    # Inline: Dagster's own validation of the YAML names the `sql:` key's file:line.
    assert "    sql_file: features.sql\n" in text
    inline = "".join(f"      {line}\n" for line in ATTACK.splitlines())
    defs_yaml.write_text(text.replace("    sql_file: features.sql\n", f"    sql: |\n{inline}"))
    out = _dg_check_defs(project)
    assert f"attributes.features.sql at {defs_yaml}:{features + 1}" in out, out
    assert refused in out and statements in out


def _run(warehouse: Any, *statements: str) -> None:
    with warehouse.connect() as con:
        cur = con.cursor()
        for sql in statements:
            cur.execute(sql)


def _labels(warehouse: Warehouse) -> int:
    return int(warehouse.query("SELECT COUNT(*) AS n FROM raw.churn_labels").column(0)[0].as_py())


@pytest.mark.parametrize(
    "sql",
    [
        # The defect's shape: close the export's `COPY (`, drop, then open a new one.
        "SELECT * FROM raw.churn_labels) TO '{stolen}' (FORMAT csv);\n"
        "DROP TABLE raw.churn_labels;\nCOPY (SELECT 1",
        "SELECT * FROM raw.churn_labels; DROP TABLE raw.churn_labels",
        "SELECT * FROM raw.churn_labels;\nDROP TABLE raw.churn_labels;",
    ],
    ids=["close-copy", "two", "two-terminated"],
)
def test_a_warehouse_runs_one_statement_even_when_handed_more(
    each_warehouse: Any, tmp_path: Path, sql: str
) -> None:
    warehouse = each_warehouse
    _run(
        warehouse,
        "CREATE SCHEMA IF NOT EXISTS raw",
        "CREATE TABLE raw.churn_labels (customer_id INTEGER, churned INTEGER)",
        "INSERT INTO raw.churn_labels VALUES (1, 0), (2, 1), (3, 0)",
    )
    stolen = tmp_path / "stolen.csv"
    sql = sql.replace("{stolen}", str(stolen))
    store = LocalObjectStore(root=str(tmp_path / "store"))

    with pytest.raises(WarehouseError):
        warehouse.export_query(
            sql, [], store, "churn/features/2026-10-15",
            max_file_bytes=1 << 20, row_group_rows=1024, tag=TAG,
        )  # fmt: skip
    # query() raises the driver's own errors: DuckDB's parser refuses the first shape.
    with pytest.raises((WarehouseError, duckdb.ParserException)):
        warehouse.query(sql)

    assert _labels(warehouse) == 3
    assert not stolen.exists()
    assert not list((tmp_path / "store").rglob("*.parquet"))


def test_one_select_still_exports_and_queries(each_warehouse: Any, tmp_path: Path) -> None:
    warehouse = each_warehouse
    _run(
        warehouse,
        "CREATE SCHEMA IF NOT EXISTS raw",
        "CREATE TABLE raw.churn_labels AS SELECT 1 AS customer_id, 0 AS churned",
    )
    store = LocalObjectStore(root=str(tmp_path / "store"))
    # A comment ending the query must not swallow what the warehouse wraps around it.
    files = warehouse.export_query(
        "SELECT customer_id, churned FROM raw.churn_labels WHERE customer_id = ? -- the one",
        [1], store, "churn/features/2026-10-15",
        max_file_bytes=1 << 20, row_group_rows=1024, tag=TAG,
    )  # fmt: skip
    assert len(files) == 1
    assert _labels(warehouse) == 1
