"""The 22 TPC-H queries at scale factor 0.01 through Python, against the shared answers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pyarrow as pa
import pytest

import shoal

from .conftest import SHARED

QUERIES = [f"q{n:02}" for n in range(1, 23)]


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _same(expected: str, actual: str) -> bool:
    if expected == actual:
        return True
    try:
        x, y = float(expected), float(actual)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6)


def _answer(query: str) -> list[list[str]]:
    path = SHARED / "tpch" / "answers" / "sf0.01" / f"{query}.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="|"))
    return rows[1:]


@pytest.mark.parametrize("query", QUERIES)
def test_tpch_query_matches_the_answer(
    session: shoal.Session, tpch_dir: Path, query: str
) -> None:
    for table in sorted(p.stem for p in tpch_dir.glob("*.parquet")):
        session.register(table, tpch_dir / f"{table}.parquet")
    sql = (SHARED / "tpch" / "queries" / f"{query}.sql").read_text()
    result = session.sql(sql).to_arrow()
    assert isinstance(result, pa.Table)
    actual = [[_cell(v) for v in row.values()] for row in result.to_pylist()]
    expected = _answer(query)
    assert len(actual) == len(expected), f"{query}: {len(actual)} rows, expected {len(expected)}"
    for i, (e, a) in enumerate(zip(expected, actual)):
        assert len(e) == len(a), f"{query} row {i}: {e} vs {a}"
        assert all(_same(x, y) for x, y in zip(e, a)), f"{query} row {i}: {e} vs {a}"
