"""TPC-H through Python against the same queries through the `shoal` CLI, interleaved on
the same machine: the overhead a Python user pays.

    python benches/python_tpch.py --data data/sf1 --shoal target/release/shoal [--rounds 3]

Both sides run each of the 22 queries once to warm up and once timed per round, embedded
with the same workers; the CLI's
`bench tpch` total and the Python total (each query's `to_arrow()`, tables registered
beforehand) are compared by their medians. Run it with the `shoal` package installed
(`pip install ./python-bindings`) and the CLI built from the same commit.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import shoal

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT.parent / "shared" / "tpch" / "queries"


def cli_total(binary: str, data: str, workers: int) -> float:
    env = dict(os.environ, SHOAL_WORKERS=str(workers))
    out = subprocess.run(
        [binary, "bench", "tpch", "--data", data, "--iterations", "1"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    match = re.search(r"^total\s+([0-9.]+)", out, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no total in the CLI's output:\n{out}")
    return float(match.group(1))


def python_total(data: str, workers: int) -> float:
    with shoal.Session(workers=workers, progress=False) as session:
        for path in sorted(Path(data).glob("*.parquet")):
            session.register(path.stem, path)
        total = 0.0
        for n in range(1, 23):
            sql = (QUERIES / f"q{n:02}.sql").read_text()
            session.sql(sql).to_arrow()  # a warm-up run, as the CLI's bench does
            started = time.perf_counter()
            session.sql(sql).to_arrow()
            total += time.perf_counter() - started
        return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/sf1")
    parser.add_argument("--shoal", default="target/release/shoal")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    cli, py = [], []
    for _ in range(args.rounds):
        cli.append(cli_total(args.shoal, args.data, args.workers))
        py.append(python_total(args.data, args.workers))
    c, p = statistics.median(cli), statistics.median(py)
    print(f"cli     {c:8.3f} s   runs {' '.join(f'{x:.3f}' for x in cli)}")
    print(f"python  {p:8.3f} s   runs {' '.join(f'{x:.3f}' for x in py)}")
    print(f"python / cli = {p / c:.3f}")


if __name__ == "__main__":
    main()
