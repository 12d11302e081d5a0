"""The chunked-array workloads of `shoal bench arrays`, from Python: the `shoal` package
against dask.array and xarray+dask in the same process, same data, same run.

    python benches/python_arrays.py [--side 20000 --chunk 2000] [--zarr data/cube.zarr]

x is a side x side float64 matrix of seeded uniform randoms in chunk x chunk chunks, kept
in memory before timing (Shoal's `persist()` in its workers, Dask's `persist()`); each
workload runs once to warm up, then --iterations times, and its median is reported with
ratio = dask / shoal (above 1: Shoal is faster). With --zarr, two xarray-style workloads
run on the (time, lat, lon) variable --var of that store (benches/make_cube.py writes one),
read with its stored chunks by `shoal.open_zarr` and `xarray.open_zarr`. Dask uses its
threaded scheduler with --threads threads and one BLAS thread each; Shoal an embedded
session of --threads workers. Run it with Shoal installed as a user gets it
(`pip install ./python-bindings`) and `pip install "dask[array]" xarray zarr`.
"""

from __future__ import annotations

import os

# Before NumPy loads: one BLAS thread per Dask worker thread (see arrays_peers.py).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import shoal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arrays_peers import dask_workloads, timed  # noqa: E402  (the Dask side, shared)

Workloads = dict[str, Callable[[], object]]


def shoal_workloads(session: shoal.Session, args: argparse.Namespace) -> Workloads:
    side, chunk = args.side, args.chunk
    x = session.array.random((side, side), chunks=(chunk, chunk), seed=42).persist()
    k = min(4000, side)
    a = x[:k, :k].rechunk((1000, 1000)).persist()
    work: Workloads = {
        "sum": lambda: x.sum().to_numpy(),
        "add_transpose_mean": lambda: (x + x.T).mean(axis=0).to_numpy(),
        "strided_std": lambda: x[::2, ::3].std().to_numpy(),
        "matmul": lambda: (a @ a).sum().to_numpy(),
        "rechunk_sum": lambda: x.rechunk((side, max(1, chunk // 4))).sum(axis=0).to_numpy(),
    }
    if args.zarr:
        t2m = session.open_zarr(args.zarr)[args.var]

        def anomaly_std() -> object:
            months = t2m.groupby("time.month")
            return (months - months.mean()).std("time").values

        work["zarr_mean_time"] = lambda: t2m.mean("time").values
        work["zarr_anomaly_std"] = anomaly_std
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--zarr", metavar="STORE")
    parser.add_argument("--var", default="t2m")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, tuple[float, float]] = {}
    with shoal.Session(workers=args.threads, progress=False) as session:
        ours = {name: timed(run, args.iterations) for name, run in shoal_workloads(session, args).items()}
    theirs = {name: timed(run, args.iterations) for name, run in dask_workloads(args).items()}
    for name in ours:
        results[name] = (ours[name], theirs[name])
    print(f"{'workload':20} {'shoal_s':>9} {'dask_s':>9} {'ratio':>7}")
    for name, (s, d) in results.items():
        print(f"{name:20} {s:9.4f} {d:9.4f} {d / s:6.2f}x")
    ratios = [d / s for s, d in results.values()]
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"geomean ratio {geomean:.2f}x over {len(ratios)} workloads")


if __name__ == "__main__":
    main()
