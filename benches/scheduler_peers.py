"""Scheduler throughput of dask.distributed on the graphs `shoal bench scheduler` runs.

A LocalCluster of worker processes (one thread each) runs graphs of no-op tasks:
`merge` (N independent tasks feeding one) and `tree` (a binary reduction of N leaves).
Prints one line per graph: NAME TASKS_PER_SECOND (median of the timed runs after a
warm-up).
"""

import argparse
import statistics
import time

from dask import delayed
from dask.distributed import Client, LocalCluster


def noop(*_args):
    return None


def merge_graph(n):
    leaves = [delayed(noop, pure=False)(i) for i in range(n)]
    return delayed(noop, pure=False)(*leaves), n + 1


def tree_graph(n):
    layer = [delayed(noop, pure=False)(i) for i in range(n)]
    total = n
    while len(layer) > 1:
        layer = [
            delayed(noop, pure=False)(*layer[i : i + 2]) for i in range(0, len(layer), 2)
        ]
        total += len(layer)
    return layer[0], total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--graphs", default="merge,tree")
    args = parser.parse_args()
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    builders = {"merge": merge_graph, "tree": tree_graph}
    for name in args.graphs.split(","):
        rates = []
        for i in range(args.iterations + 1):
            final, total = builders[name](args.tasks)
            started = time.perf_counter()
            client.compute(final).result()
            rate = total / (time.perf_counter() - started)
            if i > 0:
                rates.append(rate)
        print(f"{name} {statistics.median(rates):.0f}", flush=True)
    client.close()
    cluster.close()


if __name__ == "__main__":
    main()
