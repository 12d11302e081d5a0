"""Times the TPC-H queries on DataFusion and DuckDB (Python packages) over Shoal's Parquet
files: one warm-up, then the median of N runs per query. Writes <engine>.tsv files."""

import argparse
import os
import statistics
import time

TABLES = ["lineitem", "orders", "partsupp", "part", "customer", "supplier", "nation", "region"]


def statements(path):
    text = open(path).read()
    return [s.strip() for s in text.split(";") if s.strip()]


def time_engine(run, queries, iterations):
    results = {}
    for name, stmts in queries:
        times = []
        for i in range(iterations + 1):
            start = time.perf_counter()
            for s in stmts:
                run(s)
            if i > 0:
                times.append(time.perf_counter() - start)
        results[name] = statistics.median(times)
    results["total"] = sum(results.values())
    return results


def datafusion_runner(data, threads):
    import datafusion
    config = datafusion.SessionConfig().with_target_partitions(threads)
    ctx = datafusion.SessionContext(config)
    for t in TABLES:
        ctx.register_parquet(t, os.path.join(data, f"{t}.parquet"))
    return lambda sql: ctx.sql(sql).collect()


def duckdb_runner(data, threads):
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads TO {threads}")
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{os.path.join(data, t + '.parquet')}')")
    return lambda sql: con.execute(sql).fetchall()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    files = sorted(f for f in os.listdir(args.queries) if f.endswith(".sql"))
    queries = [(f[:-4], statements(os.path.join(args.queries, f))) for f in files]
    for name, make in [("datafusion", datafusion_runner), ("duckdb", duckdb_runner)]:
        results = time_engine(make(args.data, args.threads), queries, args.iterations)
        with open(os.path.join(args.out, f"{name}.tsv"), "w") as f:
            for q, t in results.items():
                f.write(f"{q}\t{t:.4f}\n")


if __name__ == "__main__":
    main()
