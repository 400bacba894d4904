"""Feature-SQL templating: identifiers validated, values bound as `?`, and one SELECT only."""

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from batch_inference_assets.contracts import validate_identifier

# Parameters every feature query may use, bound from the partition being scored.
PARTITION_PARAMETERS = ("partition_date", "partition_start", "partition_end")
IDENTIFIER_SLOTS = ("schema",)

# Skip quoted literals, quoted identifiers and comments so their text is never templated.
_TOKEN = re.compile(
    r"""
    (?P<skip>'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|::)
  | \{(?P<slot>[^{}]*)\}
  | (?<![:\w]):(?P<param>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<qmark>\?)
    """,
    re.VERBOSE | re.DOTALL,
)


# Where a pipeline's SQL may run: DuckDB (embedded) or Snowflake (production). A spec does not
# know which, so its SQL must read as one SELECT in both (their lexers differ: Snowflake takes
# `\'` inside a string as a quote, DuckDB ends the string there).
DIALECTS = {"duckdb": "DuckDB", "snowflake": "Snowflake"}
# What a query that only reads never holds: writes (a data-modifying CTE too), DDL, SELECT ...
# INTO, session or transaction control, and what sqlglot could only keep as an opaque command.
_NOT_A_READ = (
    *(exp.DML, exp.DDL, exp.Drop, exp.Alter, exp.Into, exp.Command, exp.Block),
    *(exp.Transaction, exp.Commit, exp.Rollback, exp.Set, exp.Use, exp.Pragma),
)


class SqlTemplateError(ValueError):
    pass


@dataclass(frozen=True)
class SqlTemplate:
    text: str
    slots: tuple[str, ...]
    params: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "SqlTemplate":
        slots: list[str] = []
        params: list[str] = []
        for m in _TOKEN.finditer(text):
            if m.group("slot") is not None:
                slot = m.group("slot").strip()
                if slot not in IDENTIFIER_SLOTS:
                    raise SqlTemplateError(
                        f"unknown placeholder {{{slot}}}; only {{schema}} is substituted, "
                        "pass values as :named parameters"
                    )
                slots.append(slot)
            elif m.group("param") is not None:
                params.append(m.group("param"))
            elif m.group("qmark") is not None:
                raise SqlTemplateError("use :named parameters, not positional '?'")
        if not text.strip():
            raise SqlTemplateError("feature SQL is empty")
        return cls(text=text, slots=tuple(slots), params=tuple(params))

    def check_parameters(self, ctx_keys: set[str]) -> None:
        clash = ctx_keys & set(PARTITION_PARAMETERS)
        if clash:
            raise SqlTemplateError(f"ctx keys {sorted(clash)} clash with partition parameters")
        unknown = sorted(set(self.params) - ctx_keys - set(PARTITION_PARAMETERS))
        if unknown:
            raise SqlTemplateError(
                f"unknown parameters {[':' + p for p in unknown]}; "
                f"known: {[':' + p for p in (*PARTITION_PARAMETERS, *sorted(ctx_keys))]}"
            )

    def render(self, *, schema: str, values: dict[str, Any]) -> tuple[str, list[Any]]:
        """The SQL with `?` placeholders and the values to bind, in order."""
        validate_identifier(schema, "schema")
        bound: list[Any] = []

        def substitute(m: re.Match[str]) -> str:
            if m.group("slot") is not None:
                return schema
            if m.group("param") is not None:
                name = m.group("param")
                if name not in values:
                    raise SqlTemplateError(f"no value for parameter :{name}")
                bound.append(values[name])
                return "?"
            return m.group(0)

        return _TOKEN.sub(substitute, self.text), bound


def check_one_select(text: str) -> None:
    """Raise unless the SQL template `text` is exactly one SELECT (WITH ... SELECT, UNION and
    parentheses allowed) that only reads, without a `;`, as both DuckDB and Snowflake read it."""

    def placeholder(m: re.Match[str]) -> str:  # the template's own syntax, as plain SQL
        if m.group("slot") is not None:
            return "feature_schema"
        return "?" if m.group("param") is not None else m.group(0)

    sql = _TOKEN.sub(placeholder, text)
    for dialect, name in DIALECTS.items():
        problem = _not_one_select(sql, dialect)
        if problem:
            raise SqlTemplateError(
                f"must be exactly one SELECT (WITH ... SELECT allowed) as both DuckDB and "
                f"Snowflake read it; as {name} SQL, {problem}"
            )


def _not_one_select(sql: str, dialect: str) -> str | None:
    try:
        statements = _statements(sql, dialect)
    except TokenError as err:
        return f"it cannot be read: {err}"
    found = [s for s in statements if s]
    if len(found) > 1:
        kinds = ", ".join(s[0].text.upper() for s in found)
        return (
            f"it is {len(found)} statements ({kinds}); the second starts on line "
            f"{found[1][0].line} of the SQL"
        )
    if not found:
        return "it holds no statement"
    if len(statements) > 1:
        return "it ends with ';': leave the ';' out (the warehouse wraps the query)"
    try:
        expression = sqlglot.parse_one(sql, read=dialect)
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        return (
            f"it does not parse: {first.get('description', err)} "
            f"(line {first.get('line')}, column {first.get('col')} of the SQL)"
        )
    if not isinstance(expression, exp.Query):
        return f"it is {_kind(expression)}, not a SELECT"
    written = next((n for n in expression.walk() if isinstance(n, _NOT_A_READ)), None)
    if written is not None:
        return f"it holds {_kind(written)}, and may only read"
    return None


def _kind(node: exp.Expr) -> str:
    if isinstance(node, exp.Into):
        return "SELECT ... INTO"
    word, what = (
        (str(node.this), "command") if isinstance(node, exp.Command) else (node.key, "statement")
    )
    return f"{'an' if word[:1].upper() in 'AEIOU' else 'a'} {word.upper()} {what}"


def _statements(sql: str, dialect: str) -> list[list[Token]]:
    """The tokens of each statement of `sql`, split at `;` as `dialect`'s lexer reads it (an
    empty last one after a terminating `;`)."""
    statements: list[list[Token]] = [[]]
    for token in Dialect.get_or_raise(dialect).tokenize(sql):
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return statements


def statement_count(sql: str, dialect: str) -> int:
    """How many statements `sql` holds as `dialect` splits them (a terminating `;` ends one):
    for a warehouse client that has no parser of its own to ask."""
    try:
        return sum(1 for s in _statements(sql, dialect) if s)
    except TokenError as err:
        raise SqlTemplateError(f"cannot read the SQL as {DIALECTS[dialect]} SQL: {err}") from err


def partition_values(
    partition_date: date, window: tuple[datetime, datetime], ctx: dict[str, Any]
) -> dict[str, Any]:
    start, end = window
    return {
        "partition_date": partition_date,
        "partition_start": start,
        "partition_end": end,
        **ctx,
    }
