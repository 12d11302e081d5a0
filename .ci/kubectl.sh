#!/usr/bin/env bash
# Unpacks Debian's kubectl (package kubernetes-client) under target/debian/ for the
# deployment tests, beside any other kubectl on the machine (installing the package could
# clash with one). Its `kubectl kustomize` is the one the Kustomize files are checked with.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/debian
if [ -x "$dir/kubernetes-client/usr/bin/kubectl" ]; then
  exit 0
fi
mkdir -p "$dir"
cd "$dir"
if ! apt-get download kubernetes-client >/dev/null 2>&1; then
  apt-get update -q >/dev/null 2>&1 || true
  apt-get download kubernetes-client >/dev/null
fi
dpkg -x kubernetes-client_*.deb kubernetes-client
rm -f kubernetes-client_*.deb
kubernetes-client/usr/bin/kubectl version --client >/dev/null
