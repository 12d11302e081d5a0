"""Chunked-array workloads of `shoal bench arrays`, run on dask.array and xarray+dask.

A float64 square (--side) of uniform randoms from a seeded generator, in (--chunk)^2
chunks, is persisted in memory; then each workload is timed on dask's threaded scheduler
with --threads workers. With --zarr, two xarray workloads also run on the (time, lat, lon)
variable --var of that store (see make_cube.py), read with its stored chunks.
Prints one line per workload: NAME SECONDS (median of the timed runs after a warm-up).

  --compare SHOAL_FILE DASK_FILE joins two such outputs (other lines are ignored) into a
  table with ratio = dask / shoal and the geometric mean of the ratios.
"""

import os

# Before numpy loads: one BLAS/OpenMP thread per dask worker thread, so that --threads
# dask threads use --threads cores (matmul would otherwise oversubscribe them).
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse
import math
import statistics
import time


def timed(run, iterations):
    run()
    times = []
    for _ in range(iterations):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def dask_workloads(args):
    """The workloads as dask.array and xarray+dask run them (threaded scheduler)."""
    import dask
    import dask.array as da

    dask.config.set(scheduler="threads", num_workers=args.threads)
    side, chunk = args.side, args.chunk
    x = da.random.default_rng(42).random((side, side), chunks=(chunk, chunk)).persist()
    k = min(4000, side)
    a = x[:k, :k].rechunk((1000, 1000)).persist()
    workloads = {
        "sum": lambda: x.sum().compute(),
        "add_transpose_mean": lambda: (x + x.T).mean(axis=0).compute(),
        "strided_std": lambda: x[::2, ::3].std().compute(),
        "matmul": lambda: (a @ a).sum().compute(),
        "rechunk_sum": lambda: x.rechunk((side, max(1, chunk // 4))).sum(axis=0).compute(),
    }
    if args.zarr:
        import warnings

        import xarray as xr

        # Zarr v3 stores from make_cube.py have no consolidated metadata (not in the spec).
        warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
        t2m = xr.open_zarr(args.zarr)[args.var]

        def anomaly_std():
            clim = t2m.groupby("time.month").mean()
            anomaly = t2m.groupby("time.month") - clim
            return anomaly.std("time").compute()

        workloads["zarr_mean_time"] = lambda: t2m.mean("time").compute()
        workloads["zarr_anomaly_std"] = anomaly_std
    return workloads


def bench(args):
    for name, run in dask_workloads(args).items():
        print(f"{name} {timed(run, args.iterations):.4f}", flush=True)


def load(path):
    """NAME SECONDS lines of a bench output, in order; every other line is skipped."""
    rows = {}
    for line in open(path):
        fields = line.split()
        if len(fields) != 2 or fields[0].startswith("#"):
            continue
        try:
            rows[fields[0]] = float(fields[1])
        except ValueError:
            pass
    return rows


def compare(shoal_path, dask_path):
    shoal, dask = load(shoal_path), load(dask_path)
    names = list(dask) + [n for n in shoal if n not in dask]
    print(f"{'workload':20} {'shoal_s':>9} {'dask_s':>9} {'ratio':>7}")
    ratios = []
    for name in names:
        s, d = shoal.get(name), dask.get(name)
        ratio = "n/a"
        if s is not None and d is not None and s > 0:
            ratios.append(d / s)
            ratio = f"{d / s:.1f}x" if d / s >= 1 else f"{d / s:.2f}x"
        cell = lambda t: "n/a" if t is None else f"{t:.4f}"
        print(f"{name:20} {cell(s):>9} {cell(d):>9} {ratio:>7}")
    if ratios:
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        print(f"geomean ratio {geomean:.2f}x over {len(ratios)} workloads")
    else:
        print("geomean ratio n/a (no workload on both sides)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--zarr", metavar="STORE")
    parser.add_argument("--var", metavar="NAME", default="t2m")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare", nargs=2, metavar=("SHOAL_FILE", "DASK_FILE"))
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    else:
        bench(args)


if __name__ == "__main__":
    main()
