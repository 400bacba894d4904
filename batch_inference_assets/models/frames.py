"""Pandas frames against declared columns, checked with dagster-pandas's column constraints.

A python model's output batch and the notebook API's result are pandas frames. dagster-pandas
decides whether each declared column is present, of a dtype that can hold its declared type, and
free of nulls where declared not null; this module words its verdict the way the platform's other
errors read ("column 'score' is object, declared double") and turns a frame that passed into
Arrow arrays of exactly the declared types.
"""

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
from dagster_pandas import PandasColumn
from dagster_pandas.constraints import (
    ColumnConstraintViolationException,
    ColumnDTypeFnConstraint,
    ConstraintViolationException,
    NonNullableColumnConstraint,
)
from pandas.api import types as pdt

from batch_inference_assets.contracts import ARROW_TYPES, Column, ColumnType


class FrameError(ValueError):
    """A frame breaks one of its declared columns; the caller says whose frame it is."""


# Which pandas dtypes may fill each declared type. No silent reinterpretation: booleans are not
# numbers and numbers are not strings. Strings, dates and nullable booleans have no narrower
# pandas dtype than object; Arrow refuses an object column's odd values when converting it.
def holds_numbers(dtype: Any) -> bool:
    return bool(pdt.is_integer_dtype(dtype) or pdt.is_float_dtype(dtype))


def holds_integers(dtype: Any) -> bool:
    return bool(pdt.is_integer_dtype(dtype) or pdt.is_bool_dtype(dtype))


def holds_strings(dtype: Any) -> bool:
    return bool(pdt.is_string_dtype(dtype))


def holds_booleans(dtype: Any) -> bool:
    return bool(pdt.is_bool_dtype(dtype) or pdt.is_object_dtype(dtype))


def holds_datetimes(dtype: Any) -> bool:
    return bool(pdt.is_datetime64_any_dtype(dtype) or pdt.is_object_dtype(dtype))


DTYPE_CHECKS: dict[ColumnType, Callable[[Any], bool]] = {
    "float64": holds_numbers,
    "int64": holds_integers,
    "string": holds_strings,
    "bool": holds_booleans,
    "date": holds_datetimes,
    "timestamp": holds_datetimes,
}


def pandas_column(column: Column) -> PandasColumn:
    """A declared column as a dagster-pandas PandasColumn: required, typed, non-null if declared."""
    # Nulls first: pandas turns an int column with a null into float64, and "has nulls" says why.
    constraints: list[Any] = [] if column.nullable else [NonNullableColumnConstraint()]
    constraints.append(ColumnDTypeFnConstraint(DTYPE_CHECKS[column.type]))
    with warnings.catch_warnings(action="ignore", category=dg.BetaWarning):  # pinned with dagster
        return PandasColumn(column.name, constraints=constraints, is_required=True)


class FrameColumns:
    """Declared columns, checked on each frame with dagster-pandas and converted to Arrow."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self.pandas_columns = [pandas_column(c) for c in self.columns]

    def validate(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The declared columns of `frame`, object columns inferred (pandas' own inference: an
        object column of floats is float64, one of strings stays object). Raises FrameError for
        the first declared column that is absent, of the wrong type or null where it may not."""
        typed = frame[[c.name for c in self.columns if c.name in frame.columns]].infer_objects()
        for column, declared in zip(self.pandas_columns, self.columns, strict=True):
            try:
                column.validate(typed)
            except ColumnConstraintViolationException as err:
                if err.constraint_name == NonNullableColumnConstraint.__name__:
                    raise FrameError(
                        f"column {declared.name!r} has nulls, declared not null"
                    ) from err
                raise FrameError(_wrong_type(frame, declared, err.constraint_description)) from err
            except ConstraintViolationException as err:  # PandasColumn's: a required one is absent
                raise FrameError(f"missing column {declared.name!r}") from err
        return typed

    def arrays(self, frame: pd.DataFrame) -> dict[str, pa.Array]:
        """The declared columns of `frame`, validated, as Arrow arrays of the declared types."""
        typed = self.validate(frame)
        out: dict[str, pa.Array] = {}
        for c in self.columns:
            try:
                out[c.name] = pa.Array.from_pandas(typed[c.name], type=ARROW_TYPES[c.type])
            except (TypeError, pa.ArrowException) as err:  # e.g. an object column of numbers
                raise FrameError(_wrong_type(frame, c, str(err))) from err
        return out


def _wrong_type(frame: pd.DataFrame, column: Column, why: str) -> str:
    return (
        f"column {column.name!r} is {frame[column.name].dtype}, "
        f"declared {ARROW_TYPES[column.type]} ({why})"
    )
