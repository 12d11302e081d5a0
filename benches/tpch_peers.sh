#!/usr/bin/env bash
# TPC-H on Shoal (embedded) against DataFusion and DuckDB (Python packages), same data,
# same machine, same run, 2 threads each. Prints per-query medians and the ratios.
#
#   bash benches/tpch_peers.sh [SCALE_FACTOR] [ITERATIONS]
#
# Builds Shoal in release mode, generates data/sf<SF> with `shoal gen tpch` if missing and
# creates .venv with the peers on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
SF="${1:-1}"
ITER="${2:-3}"
THREADS=2
DATA="data/sf${SF}"

cargo build --release -p shoal
SHOAL=target/release/shoal
if [ ! -f "$DATA/lineitem.parquet" ]; then
  "$SHOAL" gen tpch --scale-factor "$SF" --output "$DATA"
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import datafusion, duckdb' 2>/dev/null; then
  .venv/bin/pip install --quiet 'datafusion==55.*' 'duckdb==1.*'
fi

OUT=$(mktemp -d)
SHOAL_WORKERS=$THREADS "$SHOAL" bench tpch --data "$DATA" --iterations "$ITER" | grep -v '^#' | cut -f1,2 > "$OUT/shoal.tsv"
.venv/bin/python benches/tpch_peers.py --data "$DATA" --queries benches/tpch/queries \
  --iterations "$ITER" --threads "$THREADS" --out "$OUT"
.venv/bin/python - "$OUT" <<'PY'
import sys, os
out = sys.argv[1]
def load(name):
    rows = {}
    for line in open(os.path.join(out, name + ".tsv")):
        q, t = line.split("\t")[:2]
        rows[q] = float(t)
    return rows
shoal, df, duck = load("shoal"), load("datafusion"), load("duckdb")
print(f"{'query':6} {'shoal':>9} {'datafusion':>11} {'duckdb':>9} {'vs DF':>7} {'vs duck':>8}")
for q in sorted(k for k in shoal if k != "total"):
    print(f"{q:6} {shoal[q]:9.3f} {df[q]:11.3f} {duck[q]:9.3f} {shoal[q]/df[q]:7.2f} {shoal[q]/duck[q]:8.2f}")
t = "total"
print(f"{t:6} {shoal[t]:9.3f} {df[t]:11.3f} {duck[t]:9.3f} {shoal[t]/df[t]:7.2f} {shoal[t]/duck[t]:8.2f}")
print("ratios are Shoal time / peer time: below 1 means Shoal is faster")
PY
