"""Functions over column expressions, named as in SQL and pandas:
``functions.round(col("fare") * 1.1, 2)``, ``functions.sum(col("x"))`` in ``agg``.
Any other SQL function is reachable with :func:`call`."""

from __future__ import annotations

from ._expr import Expr, sql_text


def call(name: str, *args: object) -> Expr:
    """The SQL function ``name`` applied to ``args`` (expressions or literals)."""
    return Expr(f"{name}({', '.join(sql_text(a) for a in args)})")


def abs(value: object) -> Expr:
    """Absolute value."""
    return call("abs", value)


def round(value: object, digits: int = 0) -> Expr:
    """Rounded to ``digits`` decimals."""
    return call("round", value, digits)


def sqrt(value: object) -> Expr:
    """Square root."""
    return call("sqrt", value)


def lower(value: object) -> Expr:
    """Lower-cased string."""
    return call("lower", value)


def upper(value: object) -> Expr:
    """Upper-cased string."""
    return call("upper", value)


def length(value: object) -> Expr:
    """Characters in a string."""
    return call("character_length", value)


def coalesce(*values: object) -> Expr:
    """The first value that is not null."""
    return call("coalesce", *values)


def year(value: object) -> Expr:
    """The year of a date or timestamp."""
    return Expr(f"CAST(date_part('year', {sql_text(value)}) AS BIGINT)")


def month(value: object) -> Expr:
    """The month (1-12) of a date or timestamp."""
    return Expr(f"CAST(date_part('month', {sql_text(value)}) AS BIGINT)")


def sum(value: object) -> Expr:
    """Sum over a group."""
    return call("sum", value)


def mean(value: object) -> Expr:
    """Mean over a group."""
    return call("avg", value)


def min(value: object) -> Expr:
    """Minimum over a group."""
    return call("min", value)


def max(value: object) -> Expr:
    """Maximum over a group."""
    return call("max", value)


def count(value: object | None = None) -> Expr:
    """Non-null values over a group; rows with no argument."""
    return Expr("count(*)") if value is None else call("count", value)


def nunique(value: object) -> Expr:
    """Distinct values over a group."""
    return Expr(f"count(DISTINCT {sql_text(value)})")
