#!/usr/bin/env bash
# What the dashboard costs the scheduler: `shoal bench scheduler --graph merge --tasks N`
# on `shoal local --workers 2 --nthreads 1` (a scheduler and two worker processes), in
# four setups, alternating round by round in one run:
#
#   none     no dashboard
#   idle     a dashboard (--dashboard-bind) that nobody reads
#   sse      the dashboard with two Server-Sent Events readers attached (curl, reading
#            /api/v1/events for the whole run)
#   browser  the dashboard with headless Chromium showing the status page (reported, not
#            held to the bound: the browser competes for the machine's cores)
#
# Prints each setup's median tasks/s over the rounds and its ratio to `none`.
#
#   bash benches/dashboard_overhead.sh [TASKS] [ROUNDS]
#
# Builds Shoal in release mode; the browser setup needs Debian's chromium and Playwright
# in .venv (python-bindings/develop.sh installs it) and is skipped without them.
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS="${1:-100000}"
ROUNDS="${2:-3}"

cargo build --release -p shoal
SHOAL=target/release/shoal
scratch=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

setups=(none idle sse)
if [ -x /usr/bin/chromium ] && .venv/bin/python -c 'import playwright' 2>/dev/null; then
  setups+=(browser)
else
  echo "no chromium or playwright: the browser setup is skipped" >&2
fi

# Starts a cluster for `setup`, runs the benchmark on it, stops it; prints tasks/s.
run_once() {
  local setup=$1 extra=() readers=()
  [ "$setup" != none ] && extra=(--dashboard-bind 127.0.0.1:0)
  "$SHOAL" local --workers 2 --nthreads 1 "${extra[@]}" >"$scratch/out" 2>"$scratch/err" &
  local cluster=$!
  until [ -s "$scratch/out" ]; do sleep 0.1; done
  local url dash=""
  url=$(head -1 "$scratch/out")
  if [ "$setup" != none ]; then
    until dash=$(grep -o 'dashboard at http://[^ ]*' "$scratch/err" | awk '{print $3}') && [ -n "$dash" ]; do
      sleep 0.1
    done
  fi
  until "$SHOAL" status --cluster "$url" 2>/dev/null | grep -q 'worker 1'; do sleep 0.1; done
  case $setup in
    sse)
      for _ in 1 2; do
        curl -sN "${dash}api/v1/events" >/dev/null &
        readers+=($!)
      done
      ;;
    browser)
      .venv/bin/python - "${dash}status" <<'EOF' &
import sys, time
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(sys.argv[1])
    time.sleep(3600)
EOF
      readers+=($!)
      sleep 3
      ;;
  esac
  "$SHOAL" bench scheduler --graph merge --tasks "$TASKS" --cluster "$url" | awk '/tasks\/s/ {print $1}'
  for pid in "${readers[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill "$cluster"
  wait "$cluster" 2>/dev/null || true
  for pid in "${readers[@]}"; do wait "$pid" 2>/dev/null || true; done
}

declare -A rates
for round in $(seq "$ROUNDS"); do
  for setup in "${setups[@]}"; do
    rate=$(run_once "$setup")
    echo "round $round $setup: $rate tasks/s" >&2
    rates[$setup]="${rates[$setup]:-} $rate"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${rates[none]}" | median)
printf '%-8s %12s %8s\n' setup tasks/s ratio
for setup in "${setups[@]}"; do
  m=$(echo "${rates[$setup]}" | median)
  printf '%-8s %12s %8s\n' "$setup" "$m" "$(awk -v m="$m" -v b="$base" 'BEGIN { printf "%.3f", m / b }')"
done
