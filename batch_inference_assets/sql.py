"""Feature-SQL templating: identifiers are validated, values become bound `?` parameters."""

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

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
