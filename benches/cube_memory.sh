#!/usr/bin/env bash
# A monthly anomaly and standard deviation over a ~3.8 GB float32 cube (10 years of daily
# 0.5-degree data, chunks of 30 days) with 2 workers capped at 512 MiB each, in Shoal and
# in xarray + dask.distributed with the same cap: time and peak memory of each.
#
#   bash benches/cube_memory.sh [MEMORY_LIMIT]      (default 512MiB per worker)
#
# Builds Shoal in release mode, creates .venv with the peers and writes the cube to
# data/cube4g.zarr when it is missing (see benches/make_cube.py; a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${1:-512MiB}"
CUBE=data/cube4g.zarr

cargo build --release -p shoal
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import dask.distributed, xarray, zarr, psutil' 2>/dev/null; then
  .venv/bin/pip install --quiet numpy 'dask[array,distributed]' xarray zarr pandas psutil
fi
if [ ! -e "$CUBE" ]; then
  mkdir -p data
  .venv/bin/python benches/make_cube.py --out "$CUBE" --lat 360 --lon 720 --time-chunk 30
fi
.venv/bin/python benches/cube_memory.py --shoal target/release/shoal --cube "$CUBE" \
  --workers 2 --memory-limit "$LIMIT"
