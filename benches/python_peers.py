"""TPC-H from Python: the `shoal` package against the `datafusion` and `duckdb` packages in
the same process, on the same Parquet files, rounds interleaved.

    python benches/python_peers.py --data data/sf1 [--rounds 3]

Each round runs the 22 queries on each engine: once to warm up, once timed, each result
brought into Python as a `pyarrow.Table` (`to_arrow()`, `to_arrow_table()`,
`to_arrow_table()` in DuckDB). Every engine uses all the machine's cores. The medians of the
round totals are compared as ratios `peer / shoal` (above 1: Shoal is faster). Run it with
Shoal installed as a user gets it (`pip install ./python-bindings`, a release build) and
`pip install datafusion duckdb`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import datafusion
import duckdb

import shoal

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT.parent / "shared" / "tpch" / "queries"


def total(run: Callable[[str], object], queries: list[str]) -> float:
    """Seconds for the timed runs of every query (each after a warm-up run)."""
    spent = 0.0
    for sql in queries:
        run(sql)
        started = time.perf_counter()
        run(sql)
        spent += time.perf_counter() - started
    return spent


def shoal_round(tables: list[Path], queries: list[str], workers: int) -> float:
    with shoal.Session(workers=workers, progress=False) as session:
        for path in tables:
            session.register(path.stem, path)
        return total(lambda q: session.sql(q).to_arrow(), queries)


def datafusion_round(tables: list[Path], queries: list[str], workers: int) -> float:
    config = datafusion.SessionConfig().with_target_partitions(workers)
    ctx = datafusion.SessionContext(config)
    for path in tables:
        ctx.register_parquet(path.stem, str(path))
    return total(lambda q: ctx.sql(q).to_arrow_table(), queries)


def duckdb_round(tables: list[Path], queries: list[str], workers: int) -> float:
    con = duckdb.connect()
    con.execute(f"SET threads = {workers}")
    for path in tables:
        con.execute(f"CREATE VIEW {path.stem} AS SELECT * FROM read_parquet('{path}')")
    try:
        # DuckDB 2 hands a relation's rows over as `to_arrow_table` without the copy its
        # DB-API cursor makes; earlier releases call it `fetch_arrow_table`.
        if hasattr(con, "to_arrow_table"):
            return total(lambda q: con.sql(q).to_arrow_table(), queries)
        return total(lambda q: con.execute(q).fetch_arrow_table(), queries)
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/sf1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    tables = sorted(Path(args.data).resolve().glob("*.parquet"))
    queries = [(QUERIES / f"q{n:02}.sql").read_text() for n in range(1, 23)]
    engines = {
        "shoal": shoal_round,
        "datafusion": datafusion_round,
        "duckdb": duckdb_round,
    }
    runs: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, round_ in engines.items():
            runs[name].append(round_(tables, queries, args.workers))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    print(
        f"versions: shoal {shoal.__version__}, datafusion {datafusion.__version__}, "
        f"duckdb {duckdb.__version__}; {args.workers} workers"
    )
    for name, times in runs.items():
        print(f"{name:<11} {medians[name]:8.3f} s   runs {' '.join(f'{t:.3f}' for t in times)}")
    for name in ("datafusion", "duckdb"):
        print(f"{name} / shoal = {medians[name] / medians['shoal']:.3f}")


if __name__ == "__main__":
    main()
