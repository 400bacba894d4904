from datetime import date, datetime

import pytest

from batch_inference_assets.sql import SqlTemplate, SqlTemplateError, partition_values


def test_values_become_bound_parameters_in_order() -> None:
    t = SqlTemplate.parse(
        "SELECT * FROM {schema}.t WHERE d = :partition_date AND x > :min_x AND d = :partition_date"
    )
    sql, params = t.render(schema="raw", values={"partition_date": date(2026, 10, 1), "min_x": 3})
    assert sql == "SELECT * FROM raw.t WHERE d = ? AND x > ? AND d = ?"
    assert params == [date(2026, 10, 1), 3, date(2026, 10, 1)]


def test_quoted_text_casts_and_comments_are_not_templated() -> None:
    t = SqlTemplate.parse(
        "SELECT 'a:b {x}' AS s, \"c:d\", x::int -- :nope {y}\nFROM {schema}.t /* :no */"
    )
    sql, params = t.render(schema="raw", values={})
    assert params == []
    assert sql.startswith("SELECT 'a:b {x}' AS s, \"c:d\", x::int -- :nope {y}\nFROM raw.t")


@pytest.mark.parametrize("schema", ["raw; DROP TABLE x", "raw--", "a b", "1abc", 'raw."x"', ""])
def test_schema_must_be_a_plain_identifier(schema: str) -> None:
    t = SqlTemplate.parse("SELECT 1 FROM {schema}.t")
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        t.render(schema=schema, values={})


def test_dotted_schema_is_allowed() -> None:
    sql, _ = SqlTemplate.parse("SELECT 1 FROM {schema}.t").render(schema="db.raw", values={})
    assert sql == "SELECT 1 FROM db.raw.t"


def test_injection_through_a_value_stays_a_value() -> None:
    evil = "x'; DROP TABLE customers; --"
    sql, params = SqlTemplate.parse("SELECT * FROM t WHERE s = :s").render(
        schema="raw", values={"s": evil}
    )
    assert evil not in sql
    assert params == [evil]


def test_unknown_placeholders_and_parameters_are_rejected() -> None:
    with pytest.raises(SqlTemplateError, match=r"unknown placeholder \{table\}"):
        SqlTemplate.parse("SELECT * FROM {table}")
    with pytest.raises(SqlTemplateError, match=":typo"):
        SqlTemplate.parse("SELECT * FROM t WHERE d = :typo").check_parameters(set())
    with pytest.raises(SqlTemplateError, match="positional"):
        SqlTemplate.parse("SELECT * FROM t WHERE d = ?")
    with pytest.raises(SqlTemplateError, match="clash"):
        SqlTemplate.parse("SELECT 1").check_parameters({"partition_date"})


def test_partition_values_expose_date_and_window() -> None:
    start, end = datetime(2026, 10, 1), datetime(2026, 10, 2)
    values = partition_values(date(2026, 10, 1), (start, end), {"k": 1})
    assert values == {
        "partition_date": date(2026, 10, 1),
        "partition_start": start,
        "partition_end": end,
        "k": 1,
    }
