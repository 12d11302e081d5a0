#!/usr/bin/env bash
# TPC-H the way a user runs it from a shell: the 22 queries of ../shared/tpch/queries in
# order, in one file, run as one process by `shoal sql --tables DIR --format csv -f FILE`
# (start-up, table registration and printing the rows all count) and by DuckDB's
# command-line binary (PyPI package duckdb-cli) over the same Parquet files; same machine,
# same run, 2 threads each. Prints the median wall time of each and their ratio.
#
#   bash benches/tpch_cli.sh [SCALE_FACTOR] [ITERATIONS]
#
# Builds Shoal in release mode, generates data/sf<SF> with `shoal gen tpch` if missing and
# installs duckdb-cli into .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
SF="${1:-1}"
ITER="${2:-3}"
THREADS=2
DATA="$PWD/data/sf${SF}"
QUERIES=../shared/tpch/queries
[ -d "$QUERIES" ] || QUERIES=benches/tpch/queries

cargo build --release -p shoal
SHOAL=target/release/shoal
if [ ! -f "$DATA/lineitem.parquet" ]; then
  "$SHOAL" gen tpch --scale-factor "$SF" --output "$DATA"
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -x .venv/bin/duckdb ]; then
  .venv/bin/pip install --quiet 'duckdb-cli==1.*'
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for i in $(seq -w 1 22); do
  cat "$QUERIES/q$i.sql"
  echo
done > "$OUT/all22.sql"
{
  echo "SET threads TO $THREADS;"
  for t in lineitem orders partsupp part customer supplier nation region; do
    echo "CREATE VIEW $t AS SELECT * FROM read_parquet('$DATA/$t.parquet');"
  done
  cat "$OUT/all22.sql"
} > "$OUT/duckdb.sql"

SHOAL_WORKERS=$THREADS .venv/bin/python - "$ITER" "$OUT" "$SHOAL" "$DATA" <<'PY'
import statistics, subprocess, sys, time
iterations, out, shoal, data = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
commands = {
    "shoal": [shoal, "sql", "--tables", data, "--format", "csv", "-f", f"{out}/all22.sql"],
    "duckdb": [".venv/bin/duckdb", "-csv", "-f", f"{out}/duckdb.sql"],
}
median = {}
for name, argv in commands.items():
    times = []
    for i in range(iterations + 1):
        start = time.perf_counter()
        run = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        took = time.perf_counter() - start
        if run.returncode != 0:
            sys.exit(f"{name} failed: {run.stderr.decode().strip()}")
        if i > 0:
            times.append(took)
    median[name] = statistics.median(times)
    print(f"{name:7} {median[name]:7.2f} s  (median of {iterations}, {len(run.stdout)} bytes out)")
print(f"shoal / duckdb: {median['shoal'] / median['duckdb']:.2f}x (below 1: Shoal is faster)")
PY
