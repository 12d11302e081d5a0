#!/usr/bin/env bash
# Scheduler throughput: `shoal bench scheduler` (a scheduler and 2 worker processes with
# one slot each) against dask.distributed (a LocalCluster of 2 worker processes with one
# thread each), on the same no-op graphs, same machine, same run.
#
#   bash benches/scheduler_peers.sh [SHOAL_TASKS] [DASK_TASKS]
#
# Builds Shoal in release mode and creates .venv with dask[distributed] on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
SHOAL_TASKS="${1:-100000}"
DASK_TASKS="${2:-10000}"

cargo build --release -p shoal
SHOAL=target/release/shoal
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import dask.distributed' 2>/dev/null; then
  .venv/bin/pip install --quiet 'dask[distributed]'
fi

printf '%-6s %14s %14s %8s\n' graph shoal_tasks/s dask_tasks/s ratio
for graph in merge tree; do
  shoal=$("$SHOAL" bench scheduler --graph "$graph" --tasks "$SHOAL_TASKS" | awk '/tasks\/s/ {print $1}')
  dask=$(.venv/bin/python benches/scheduler_peers.py --graphs "$graph" --tasks "$DASK_TASKS" 2>/dev/null | awk '{print $2}')
  ratio=$(awk -v s="$shoal" -v d="$dask" 'BEGIN { printf "%.1fx", s / d }')
  printf '%-6s %14s %14s %8s\n' "$graph" "$shoal" "$dask" "$ratio"
done
