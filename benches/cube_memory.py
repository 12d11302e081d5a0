"""An anomaly and standard deviation over a cube several times the memory allowed, in
Shoal and in xarray + dask.distributed with the same memory cap: time and peak memory.

Shoal: `shoal --verbose run CUBE OUT --var VAR -p "anomaly(time.month) | std(time)"`
with --workers in-process workers of --memory-limit each; its peak is the process's
VmHWM, which `--verbose` prints. Dask: a LocalCluster of --workers worker processes, one
thread each, `memory_limit` the same per worker (dask's own spilling, pausing and
restarting apply), computing `(t2m.groupby("time.month") - clim).std("time")` (a
(lat, lon) result, as Shoal's, which Shoal writes as a small Zarr store); its peak is the largest sum of the resident memory of this process (client and
scheduler) and its workers, sampled every 50 ms. One run each after a warm-up of neither
(the cube is read cold from the page cache both times only if the machine drops it).

  python benches/cube_memory.py --shoal target/release/shoal --cube data/cube4g.zarr \
      [--workers 2] [--memory-limit 512MiB]
"""

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time


def parse_bytes(text):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for unit, scale in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * scale)
    return int(text)


def run_shoal(args, out):
    env = dict(os.environ, SHOAL_WORKERS=str(args.workers))
    started = time.perf_counter()
    done = subprocess.run(
        [args.shoal, "--verbose", "run", args.cube, out, "--var", args.var,
         "-p", "anomaly(time.month) | std(time)", "--memory-limit", args.memory_limit],
        env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr.strip().splitlines()[0], "seconds": seconds}
    peak = next(int(l.split()[3]) for l in done.stderr.splitlines()
                if l.startswith("peak resident memory:"))
    spilled = next(int(l.split()[1]) for l in done.stdout.splitlines()
                   if l.startswith("spilled "))
    return {"ok": True, "seconds": seconds, "peak": peak, "spilled": spilled}


def run_dask(args):
    import dask
    import psutil
    import xarray as xr
    from dask.distributed import Client, LocalCluster

    dask.config.set({"distributed.worker.daemon": False})
    limit = parse_bytes(args.memory_limit)
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=limit, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        me = psutil.Process()
        peak = [0]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                total = 0
                for p in [me] + me.children(recursive=True):
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        try:
            t2m = xr.open_zarr(args.cube)[args.var]
            clim = t2m.groupby("time.month").mean()
            result = (t2m.groupby("time.month") - clim).std("time")
            result.compute()
            ok, error = True, None
        except Exception as e:  # a worker killed for its memory ends the job
            ok, error = False, f"{type(e).__name__}: {e}".splitlines()[0]
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        client.close()
    row = {"ok": ok, "seconds": seconds, "peak": peak[0]}
    if error:
        row["error"] = error
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shoal", required=True)
    parser.add_argument("--cube", required=True)
    parser.add_argument("--var", default="t2m")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="512MiB")
    args = parser.parse_args()
    total = parse_bytes(args.memory_limit) * args.workers
    work = tempfile.mkdtemp()
    try:
        rows = {
            "shoal": run_shoal(args, os.path.join(work, "shoal.zarr")),
            "xarray+dask": run_dask(args),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"cap: {args.workers} workers x {args.memory_limit} = {total / 2**20:.0f} MiB")
    print(f"{'engine':12} {'seconds':>8} {'peak_MB':>8} {'peak/cap':>8}  note")
    for name, row in rows.items():
        peak = row.get("peak")
        cells = (f"{row['seconds']:8.1f} {peak / 1e6:8.0f} {peak / total:7.2f}x"
                 if peak else f"{row['seconds']:8.1f} {'n/a':>8} {'n/a':>8}")
        note = "" if row["ok"] else f"failed: {row['error']}"
        if row.get("spilled") is not None:
            note = f"spilled {row['spilled'] / 1e6:.0f} MB"
        print(f"{name:12} {cells}  {note}")
    if rows["shoal"]["ok"] and rows["xarray+dask"]["ok"]:
        ratio = rows["xarray+dask"]["seconds"] / rows["shoal"]["seconds"]
        print(f"dask / shoal time: {ratio:.1f}x")


if __name__ == "__main__":
    main()
