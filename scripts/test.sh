#!/usr/bin/env bash
# Every test: the Rust workspace (`cargo test --workspace`), then the Python package's
# tests (pytest) against the native module built from the same `target/` (see
# python-bindings/develop.sh, which also makes the repository's `.venv`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
bash python-bindings/develop.sh
.venv/bin/python -m pytest python-bindings/tests -q
