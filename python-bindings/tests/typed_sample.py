"""A user's script that `mypy --strict` must accept (test_types.py runs it)."""

from __future__ import annotations

import pyarrow as pa

import shoal
from shoal import col, functions


def report(session: shoal.Session) -> pa.Table:
    trips = session.from_arrow(pa.table({"zone": ["a", "b"], "fare": [3.5, 12.0]}))
    busy = trips[(col("fare") > 10) | col("zone").isin(["a"])]
    per_zone = busy.groupby("zone").agg(total=functions.sum(col("fare")), n=("fare", "count"))
    table: pa.Table = per_zone.sort_values("zone").to_arrow()
    return table


def main() -> None:
    with shoal.Session(workers=1, progress=False) as session:
        rows: int = session.sql("select 1 as x").count()
        print(rows, report(session).num_rows, session.status()["workers"][0]["slots"])


if __name__ == "__main__":
    main()
