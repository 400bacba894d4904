"""A pipeline's SQL is exactly one SELECT, as both DuckDB and Snowflake read it, when it loads."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from batch_inference_assets import SpecError, load_spec, load_specs
from batch_inference_assets.spec import PipelineSpec
from batch_inference_assets.sql import SqlTemplateError, check_one_select, statement_count
from dagster_defs.definitions import PIPELINES_DIR
from tests.conftest import churn_yaml

CHURN_SQL = (PIPELINES_DIR / "churn" / "features.sql").read_text()
# The defect's feature SQL: it closes the warehouse's `COPY (`, drops a table, opens a new one.
ATTACK = (
    CHURN_SQL.rstrip()
    + ") TO '/tmp/stolen.csv' (FORMAT csv);\nDROP TABLE raw.churn_labels;\nCOPY (SELECT 1\n"
)
ONE_SELECT = "must be exactly one SELECT"


def _spec_file(tmp_path: Path, raw: dict[str, Any], sql: str) -> Path:
    (tmp_path / "features.sql").write_text(sql)
    raw["features"] = {**raw["features"], "sql_file": "features.sql"}
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _error_at(raw: dict[str, Any]) -> tuple[tuple[str | int, ...], str]:
    with pytest.raises(ValidationError) as err:
        PipelineSpec.model_validate(raw)
    errors = err.value.errors()
    assert len(errors) == 1, errors
    return tuple(errors[0]["loc"]), errors[0]["msg"]


def test_the_attack_in_a_sql_file_is_refused_at_load(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, churn_yaml(), ATTACK)
    second = len(CHURN_SQL.rstrip().splitlines()) + 1  # the DROP's line in features.sql
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message and "features.sql: " in message
    assert f"{ONE_SELECT} (WITH ... SELECT allowed) as both DuckDB and Snowflake" in message
    assert f"3 statements (SELECT, DROP, COPY); the second starts on line {second}" in message


def test_the_attack_inline_is_an_error_on_the_sql_field() -> None:
    raw = churn_yaml()
    raw["features"] = {"sql": ATTACK, "id_columns": ["customer_id"]}
    loc, msg = _error_at(raw)
    assert loc == ("features", "sql")
    assert ONE_SELECT in msg and "3 statements (SELECT, DROP, COPY)" in msg


def test_training_and_landing_sql_are_one_select_too() -> None:
    raw = churn_yaml()
    training = raw["training"]
    raw["training"] = {**training, "sql": "DELETE FROM raw.churn_labels", "sql_file": None}
    loc, msg = _error_at(raw)
    assert loc == ("training", "sql") and "a DELETE statement, not a SELECT" in msg

    raw = churn_yaml()
    raw["landing"] = {"sql": "SELECT COUNT(*) FROM {schema}.t; DROP TABLE {schema}.t"}
    loc, msg = _error_at(raw)
    assert loc == ("landing", "sql") and "2 statements (SELECT, DROP)" in msg


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("SELECT 1 AS x; DROP TABLE raw.churn_labels", "as DuckDB SQL, it is 2 statements"),
        ("SELECT 1 AS x;", "it ends with ';'"),
        ("SELECT 1 AS x; -- done", "it ends with ';'"),
        ("DROP TABLE raw.churn_labels", "a DROP statement, not a SELECT"),
        ("WITH a AS (SELECT 1 AS x) INSERT INTO t SELECT * FROM a", "an INSERT statement"),
        ("SELECT * INTO raw.copy FROM raw.churn_labels", "it holds SELECT ... INTO"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "it holds a DELETE"),
        ("EXPLAIN SELECT 1", "an EXPLAIN command"),
        ("CALL drop_everything()", "a CALL command"),
        ("-- only a comment", "it holds no statement"),
        # Snowflake reads `\'` as a quote inside the string, so one statement; DuckDB two.
        ("SELECT 'a\\'; DROP TABLE raw.churn_labels; --' AS s", "as DuckDB SQL, it is 2"),
        # DuckDB nests block comments, so one statement; Snowflake ends the comment early.
        ("SELECT 1 /* /* */ ; DROP TABLE raw.churn_labels -- */", "as Snowflake SQL, it is 2"),
        ("SELECT 1 FROM {schema}.t WHERE d = :partition_date)", "it does not parse"),
    ],
)
def test_anything_but_one_select_is_refused(sql: str, why: str) -> None:
    with pytest.raises(SqlTemplateError, match=ONE_SELECT) as err:
        check_one_select(sql)
    assert why in str(err.value)


@pytest.mark.parametrize(
    "sql",
    [
        CHURN_SQL,
        "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
        "SELECT 1 AS x UNION ALL SELECT 2",
        "(SELECT 1 AS x)",
        "SELECT ';' AS s, \"a;b\" FROM {schema}.t -- a ; in a comment",
        "SELECT 1 AS x /* ; DROP TABLE t; */ FROM {schema}.t WHERE d = :partition_date",
        "SELECT $$a; DROP TABLE t;$$ AS s",
        "SELECT * EXCLUDE (x) FROM {schema}.t QUALIFY ROW_NUMBER() OVER (ORDER BY d) = 1",
    ],
)
def test_one_select_loads(sql: str) -> None:
    check_one_select(sql)


def test_the_shipped_pipelines_and_the_scaffold_still_load() -> None:
    specs = load_specs(PIPELINES_DIR)
    assert {s.name for s in specs} >= {"churn", "demand"}
    template = Path(__file__).parents[2] / "batch_inference_assets" / "templates"
    check_one_select((template / "features.sql.tmpl").read_text().format(name="x"))


def test_statements_are_counted_as_snowflake_splits_them() -> None:
    assert statement_count("SELECT 1", "snowflake") == 1
    assert statement_count("SELECT 1;", "snowflake") == 1
    assert statement_count("SELECT 1; DROP TABLE t", "snowflake") == 2
    assert statement_count("SELECT 'a\\'; DROP TABLE t; --'", "snowflake") == 1
    assert statement_count("SELECT 'a\\'; DROP TABLE t; --'", "duckdb") == 2
    with pytest.raises(SqlTemplateError, match="cannot read"):
        statement_count("SELECT 'unterminated", "snowflake")
