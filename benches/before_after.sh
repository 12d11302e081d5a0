#!/usr/bin/env bash
# Two builds of `shoal` compared on the same machine in the same run, interleaved so drift
# and noise fall on both alike: TPC-H SF1 embedded (2 workers), TPC-H SF1 on
# `shoal local --workers 2`, and `shoal bench scheduler --graph merge --tasks 100000` on two
# worker processes; medians of ROUNDS runs each. With CALLGRIND=1 it also counts the
# instructions the scheduler process executes for a 20000-task merge graph (valgrind).
#
#   bash benches/before_after.sh BEFORE_SHOAL AFTER_SHOAL [ROUNDS] [DATA_DIR]
#
# Build the "before" binary from an older commit, e.g.
#   git worktree add /tmp/before OLD && (cd /tmp/before && \
#     CARGO_TARGET_DIR=$PWD/../main/target cargo build --release -p shoal) ...
set -u
BEFORE=$1
AFTER=$2
ROUNDS=${3:-5}
DATA=${4:-data/sf1}
OUT=$(mktemp -d)
[ -f "$DATA/lineitem.parquet" ] || "$AFTER" gen tpch --scale-factor 1 --output "$DATA" || exit 1

for round in $(seq "$ROUNDS"); do
  for v in before after; do
    bin=$BEFORE; [ "$v" = after ] && bin=$AFTER
    SHOAL_WORKERS=2 "$bin" bench tpch --data "$DATA" --iterations 1 2>/dev/null \
      | awk '/^total/ {print $2}' >> "$OUT/$v.embedded"
    coproc LOCAL { exec "$bin" local --workers 2 2>/dev/null; }
    read -r url <&"${LOCAL[0]}"
    "$bin" bench tpch --cluster "$url" --data "$DATA" --iterations 1 2>/dev/null \
      | awk '/^total/ {print $2}' >> "$OUT/$v.local"
    kill "$LOCAL_PID" 2>/dev/null; wait "$LOCAL_PID" 2>/dev/null
    "$bin" bench scheduler --graph merge --tasks 100000 --iterations 1 2>/dev/null \
      | awk '/tasks\/s/ {print $1}' >> "$OUT/$v.scheduler"
  done
done

median() { sort -g "$1" | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
printf '%-10s %12s %12s %7s   runs (before | after)\n' what before after ratio
for kind in embedded local scheduler; do
  b=$(median "$OUT/before.$kind"); a=$(median "$OUT/after.$kind")
  printf '%-10s %12s %12s %7s   %s| %s\n' "$kind" "$b" "$a" \
    "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')" \
    "$(tr '\n' ' ' < "$OUT/before.$kind")" "$(tr '\n' ' ' < "$OUT/after.$kind")"
done
echo "(embedded/local: TPC-H SF1 total seconds; scheduler: tasks per second)"

[ "${CALLGRIND:-0}" = 1 ] || exit 0
# Instructions of the scheduler process alone, workers running natively.
for v in before after; do
  bin=$BEFORE; [ "$v" = after ] && bin=$AFTER
  cg="$OUT/callgrind.$v"
  coproc SCHED { exec valgrind --tool=callgrind --callgrind-out-file="$cg" \
    "$bin" scheduler --bind 127.0.0.1:0 --exit-with-stdin 2>/dev/null; }
  read -r line <&"${SCHED[0]}"
  url=${line##* }
  for _ in 1 2; do
    sleep 1000000 | "$bin" worker --scheduler "$url" --cpus 1 --memory-limit 1GiB \
      --exit-with-stdin >/dev/null 2>&1 &
  done
  sleep 3
  "$bin" bench scheduler --graph merge --tasks 20000 --iterations 1 --cluster "$url" \
    >/dev/null 2>&1
  exec {SCHED[1]}>&-
  wait "$SCHED_PID"
  pkill -f "sleep 1000000" 2>/dev/null
  printf 'scheduler instructions %-6s %s\n' "$v" "$(awk '/^(summary|totals):/ {print $2; exit}' "$cg")"
done
