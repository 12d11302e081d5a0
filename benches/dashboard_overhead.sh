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
# Prints each setup's median tasks/s over the rounds and its ratio to `none`, and the CPU
# time the scheduler's process (the `shoal scheduler` that `shoal local` starts, which
# also serves the dashboard) spent per task, from /proc, with its ratio to `none`: on two
# busy cores throughput varies by several percent from run to run, CPU time much less.
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
# Each round runs in a subshell (`$(run_once …)`): it records what it started here, so an
# interrupted run still stops every cluster, reader and browser.
cleanup() {
  if [ -f "$scratch/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$scratch/pids"
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT
started() { echo "$1" >>"$scratch/pids"; }
# Waits until `$2` succeeds while process `$1` lives; fails the round otherwise.
await() {
  local pid=$1
  shift
  local deadline=$((SECONDS + 60))
  until "$@"; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -gt "$deadline" ]; then
      echo "gave up waiting for: $*" >&2
      cat "$scratch/err" >&2
      return 1
    fi
    sleep 0.1
  done
}

setups=(none idle sse)
if [ -x /usr/bin/chromium ] && .venv/bin/python -c 'import playwright' 2>/dev/null; then
  setups+=(browser)
else
  echo "no chromium or playwright: the browser setup is skipped" >&2
fi

# Starts a cluster for `setup`, runs the benchmark on it, stops it; prints tasks/s.
has_url() { [ -s "$scratch/out" ]; }
# User and system CPU time of process $1, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
has_dashboard() { grep -q 'dashboard at http://' "$scratch/err"; }
has_workers() {
  [ "$("$SHOAL" status --cluster "$url" --format json 2>/dev/null |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["workers"]))' 2>/dev/null)" = 2 ]
}

run_once() {
  local setup=$1 extra=() readers=()
  [ "$setup" != none ] && extra=(--dashboard-bind 127.0.0.1:0)
  rm -f "$scratch/out" "$scratch/err"
  "$SHOAL" local --workers 2 --nthreads 1 "${extra[@]}" >"$scratch/out" 2>"$scratch/err" &
  local cluster=$!
  started "$cluster"
  await "$cluster" has_url || return 1
  local dash=""
  url=$(head -1 "$scratch/out")
  if [ "$setup" != none ]; then
    await "$cluster" has_dashboard || return 1
    dash=$(grep -o 'dashboard at http://[^ ]*' "$scratch/err" | head -1 | awk '{print $3}')
  fi
  await "$cluster" has_workers || return 1
  case $setup in
    sse)
      for _ in 1 2; do
        curl -sN "${dash}api/v1/events" >/dev/null &
        readers+=($!)
        started $!
      done
      ;;
    browser)
      .venv/bin/python - "${dash}status" <<'EOF' &
import sys, time
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                args=["--no-sandbox", "--disable-dev-shm-usage"])
    page = browser.new_page()
    page.goto(sys.argv[1])
    time.sleep(3600)
EOF
      readers+=($!)
      started $!
      sleep 3
      ;;
  esac
  local rate before after scheduler
  scheduler=$(pgrep -P "$cluster" -f 'shoal scheduler' | head -1)
  before=$(cpu_ticks "$scheduler")
  rate=$("$SHOAL" bench scheduler --graph merge --tasks "$TASKS" --cluster "$url" | awk '/tasks\/s/ {print $1}')
  after=$(cpu_ticks "$scheduler")
  [ -n "$rate" ] || { echo "the $setup benchmark printed no rate" >&2; return 1; }
  # One warm-up and three timed runs of TASKS + 1 tasks each; microseconds per task.
  echo "$rate $(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$TASKS" \
    'BEGIN { printf "%.3f", t / hz * 1e6 / (4 * (n + 1)) }')"
  for pid in "${readers[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill "$cluster"
  wait "$cluster" 2>/dev/null || true
  for pid in "${readers[@]}"; do wait "$pid" 2>/dev/null || true; done
}

declare -A rates cpus
for round in $(seq "$ROUNDS"); do
  for setup in "${setups[@]}"; do
    result=$(run_once "$setup") || exit 1
    read -r rate cpu <<<"$result"
    echo "round $round $setup: $rate tasks/s, scheduler CPU $cpu us/task" >&2
    rates[$setup]="${rates[$setup]:-} $rate"
    cpus[$setup]="${cpus[$setup]:-} $cpu"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${rates[none]}" | median)
base_cpu=$(echo "${cpus[none]}" | median)
ratio() { awk -v m="$1" -v b="$2" 'BEGIN { printf "%.3f", m / b }'; }
printf '%-8s %12s %8s %16s %8s\n' setup tasks/s ratio 'sched us/task' ratio
for setup in "${setups[@]}"; do
  m=$(echo "${rates[$setup]}" | median)
  c=$(echo "${cpus[$setup]}" | median)
  printf '%-8s %12s %8s %16s %8s\n' "$setup" "$m" "$(ratio "$m" "$base")" "$c" "$(ratio "$c" "$base_cpu")"
done
