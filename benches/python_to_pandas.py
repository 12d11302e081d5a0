"""A 10-million-row result into pandas: Shoal's `to_pandas()` against
`pyarrow.Table.to_pandas()` on the same rows, in one process.

    python benches/python_to_pandas.py [--rows 10000000] [--rounds 5]

The rows (int64 id, float64 x, int32 k, a string label) are made once with pyarrow and
handed to Shoal with `from_arrow` (shared, not copied). Shoal's side runs the frame as a
job on an embedded session and converts its result; pyarrow's side converts the table it
already holds. Medians of --rounds runs after a warm-up; ratio = shoal / pyarrow (at most
1 means Shoal's path costs nothing over pyarrow's conversion).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import shoal


def timed(run: Callable[[], object], rounds: int) -> float:
    run()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    k = pa.array(rng.integers(0, 1000, args.rows, dtype=np.int32))
    table = pa.table(
        {
            "id": pa.array(np.arange(args.rows, dtype=np.int64)),
            "x": pa.array(rng.random(args.rows)),
            "k": k,
            "label": pc.binary_join_element_wise("k", pc.cast(k, pa.string()), ""),
        }
    )
    with shoal.Session(progress=False) as session:
        frame = session.from_arrow(table)
        ours = timed(frame.to_pandas, args.rounds)
        # The same conversion of the rows as Shoal hands them over (its batches).
        result = frame.to_arrow()
        theirs = timed(table.to_pandas, args.rounds)
        handed = timed(result.to_pandas, args.rounds)
    print(f"rows {args.rows}, pyarrow {pa.__version__}")
    print(f"shoal to_pandas()              {ours:8.3f} s")
    print(f"pyarrow Table.to_pandas()      {theirs:8.3f} s")
    print(f"pyarrow on Shoal's result      {handed:8.3f} s")
    print(f"shoal / pyarrow = {ours / theirs:.3f}")


if __name__ == "__main__":
    main()
