"""Column expressions: ``shoal.col("fare") * 2 > shoal.lit(10)``.

An :class:`Expr` is SQL text built with Python operators; frames evaluate it against their
columns (``df[expr]``, ``df.filter(expr)``, ``df.assign(name=expr)``,
``groupby(...).agg(name=expr)``). Functions are in :mod:`shoal.functions`.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: object) -> str:
    if isinstance(value, Expr):
        return value.sql
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "CAST('NaN' AS DOUBLE)"
        if math.isinf(value):
            return f"CAST('{'-' if value < 0 else ''}inf' AS DOUBLE)"
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, datetime.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, datetime.date):
        return f"DATE '{value.isoformat()}'"
    raise TypeError(f"cannot use {type(value).__name__} {value!r} as a SQL literal")


class Expr:
    """A column expression (SQL text). Combine with ``+ - * / % **``, comparisons,
    ``&`` (and), ``|`` (or) and ``~`` (not), as in pandas."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        #: The expression as SQL.
        self.sql = sql

    def __repr__(self) -> str:
        return f"shoal.Expr({self.sql})"

    def __bool__(self) -> bool:
        raise TypeError(
            "an expression has no truth value: combine conditions with & and |, not and/or"
        )

    def _binary(self, op: str, other: object) -> Expr:
        return Expr(f"({self.sql} {op} {_literal(other)})")

    def _reflected(self, op: str, other: object) -> Expr:
        return Expr(f"({_literal(other)} {op} {self.sql})")

    def __add__(self, other: object) -> Expr:
        return self._binary("+", other)

    def __radd__(self, other: object) -> Expr:
        return self._reflected("+", other)

    def __sub__(self, other: object) -> Expr:
        return self._binary("-", other)

    def __rsub__(self, other: object) -> Expr:
        return self._reflected("-", other)

    def __mul__(self, other: object) -> Expr:
        return self._binary("*", other)

    def __rmul__(self, other: object) -> Expr:
        return self._reflected("*", other)

    def __truediv__(self, other: object) -> Expr:
        # True division, as in Python: integer columns divide as floats.
        return Expr(f"(CAST({self.sql} AS DOUBLE) / {_literal(other)})")

    def __rtruediv__(self, other: object) -> Expr:
        return Expr(f"(CAST({_literal(other)} AS DOUBLE) / {self.sql})")

    def __mod__(self, other: object) -> Expr:
        return self._binary("%", other)

    def __pow__(self, other: object) -> Expr:
        return Expr(f"power({self.sql}, {_literal(other)})")

    def __neg__(self) -> Expr:
        return Expr(f"(- {self.sql})")

    def __eq__(self, other: object) -> Expr:  # type: ignore[override]
        return self._binary("=", other)

    def __ne__(self, other: object) -> Expr:  # type: ignore[override]
        return self._binary("<>", other)

    def __lt__(self, other: object) -> Expr:
        return self._binary("<", other)

    def __le__(self, other: object) -> Expr:
        return self._binary("<=", other)

    def __gt__(self, other: object) -> Expr:
        return self._binary(">", other)

    def __ge__(self, other: object) -> Expr:
        return self._binary(">=", other)

    def __and__(self, other: object) -> Expr:
        return self._binary("AND", other)

    def __or__(self, other: object) -> Expr:
        return self._binary("OR", other)

    def __invert__(self) -> Expr:
        return Expr(f"(NOT {self.sql})")

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Iterable[object]) -> Expr:
        """Whether the value is one of ``values``."""
        items = ", ".join(_literal(v) for v in values)
        return Expr(f"({self.sql} IN ({items}))") if items else Expr("FALSE")

    def between(self, low: object, high: object) -> Expr:
        """``low <= value <= high``."""
        return Expr(f"({self.sql} BETWEEN {_literal(low)} AND {_literal(high)})")

    def isna(self) -> Expr:
        """Whether the value is null (pandas' NaN arrives as null through Arrow)."""
        return Expr(f"({self.sql} IS NULL)")

    isnull = isna

    def notna(self) -> Expr:
        """The opposite of :meth:`isna`."""
        return ~self.isna()

    notnull = notna

    def astype(self, sql_type: str) -> Expr:
        """The value cast to a SQL type (``"double"``, ``"bigint"``, ``"varchar"`` ...)."""
        return Expr(f"CAST({self.sql} AS {sql_type})")


def col(name: str) -> Expr:
    """The column ``name`` (its case kept)."""
    return Expr(_quote_identifier(name))


def lit(value: object) -> Expr:
    """A literal: numbers, strings, booleans, None, dates and datetimes."""
    return Expr(_literal(value))


def sql_text(value: object) -> str:
    """``value`` as SQL: an expression's text, or a literal."""
    return _literal(value)
