#!/usr/bin/env bash
# Chunked arrays: `shoal bench arrays` against dask.array and xarray+dask (threaded
# scheduler, 2 threads, one BLAS thread each), same workloads, same machine, same run.
# Prints per-workload medians, ratio = dask / shoal, and the geometric mean of the ratios.
#
#   bash benches/arrays_peers.sh [SIDE] [CHUNK]
#   CUBE=data/cube.zarr bash benches/arrays_peers.sh     (adds the Zarr workloads)
#
# Builds Shoal in release mode and creates .venv with the peers. With CUBE set, the store
# is written first when missing (~1 GB of float32, see benches/make_cube.py). Shoal runs
# twice: with the system OpenBLAS when it is installed (`apt install
# libopenblas0-pthread`; its bench output says which kernel ran), and with
# SHOAL_BLAS=off (the `gemm` kernels built into Shoal, what a machine without a system
# BLAS gets); both are compared with the same Dask run.
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
ARGS=(--side "$SIDE" --chunk "$CHUNK")
if [ -n "${CUBE:-}" ]; then
  if [ ! -e "$CUBE" ]; then
    mkdir -p "$(dirname "$CUBE")"
    .venv/bin/python benches/make_cube.py --out "$CUBE"
  fi
  ARGS+=(--zarr "$CUBE" --var t2m)
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
SHOAL_WORKERS=$THREADS "$SHOAL" bench arrays "${ARGS[@]}" > "$OUT/shoal.txt"
SHOAL_BLAS=off SHOAL_WORKERS=$THREADS "$SHOAL" bench arrays "${ARGS[@]}" > "$OUT/shoal-noblas.txt"
.venv/bin/python benches/arrays_peers.py "${ARGS[@]}" --threads "$THREADS" > "$OUT/dask.txt"
echo "# Shoal with the system BLAS ($(grep -m1 '^# matrix products' "$OUT/shoal.txt" | cut -c3-))"
.venv/bin/python benches/arrays_peers.py --compare "$OUT/shoal.txt" "$OUT/dask.txt"
echo
echo "# Shoal with SHOAL_BLAS=off ($(grep -m1 '^# matrix products' "$OUT/shoal-noblas.txt" | cut -c3-))"
.venv/bin/python benches/arrays_peers.py --compare "$OUT/shoal-noblas.txt" "$OUT/dask.txt"
