#!/usr/bin/env bash
# Chunked arrays: `shoal bench arrays` against dask.array and xarray+dask (threaded
# scheduler, 2 threads, one BLAS thread each), same workloads, same machine, same run.
# Prints per-workload medians, ratio = dask / shoal, and the geometric mean of the ratios.
#
#   bash benches/arrays_peers.sh [SIDE] [CHUNK]          (CUBE=path.zarr to use a store)
#
# Builds Shoal in release mode, creates .venv with the peers and, without CUBE, writes
# data/cube.zarr (~1 GB of float32, see benches/make_cube.py) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
SIDE="${1:-20000}"
CHUNK="${2:-2000}"
THREADS=2

cargo build --release -p shoal
SHOAL=target/release/shoal
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import dask.array, xarray, zarr' 2>/dev/null; then
  .venv/bin/pip install --quiet numpy 'dask[array]' xarray zarr pandas
fi
if [ -z "${CUBE:-}" ]; then
  CUBE=data/cube.zarr
  if [ ! -e "$CUBE" ]; then
    mkdir -p data
    .venv/bin/python benches/make_cube.py --out "$CUBE"
  fi
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
ARGS=(--side "$SIDE" --chunk "$CHUNK" --zarr "$CUBE" --var t2m)
SHOAL_WORKERS=$THREADS "$SHOAL" bench arrays "${ARGS[@]}" > "$OUT/shoal.txt"
.venv/bin/python benches/arrays_peers.py "${ARGS[@]}" --threads "$THREADS" > "$OUT/dask.txt"
.venv/bin/python benches/arrays_peers.py --compare "$OUT/shoal.txt" "$OUT/dask.txt"
