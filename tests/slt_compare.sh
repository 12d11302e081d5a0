#!/usr/bin/env bash
# DataFusion's own sqllogictest files through Shoal and through plain DataFusion,
# compared record by record (tests/src/bin/slt_diff).
#
#   bash tests/slt_compare.sh            embedded Shoal: 3 workers, 7 partitions
#   CLUSTER=1 bash tests/slt_compare.sh  also on a real cluster: a `shoal scheduler` and
#                                        two `shoal worker` processes on 127.0.0.1
#
# The files come from the `datafusion-sqllogictest` crate of the DataFusion version Shoal
# is built on, fetched from the cargo registry at run time (the local cache when cargo
# already has it). Each run works in its own unpacked copy, so files one engine writes
# (COPY, INSERT into external tables) never reach the other. DataFusion runs twice: a
# record on which its two runs disagree is counted as DataFusion's own nondeterminism.
# Spark-function files are skipped and counted. Prints every divergence and the counts.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=55.2.0
CRATE=datafusion-sqllogictest-$VERSION
WORK=${WORK:-target/slt-compare}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

archive="$WORK/$CRATE.crate"
if [ ! -s "$archive" ]; then
  cached=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$CRATE.crate" 2>/dev/null | head -1 || true)
  if [ -n "$cached" ]; then
    cp "$cached" "$archive"
  else
    curl -sSfL -o "$archive" "https://static.crates.io/crates/datafusion-sqllogictest/$CRATE.crate"
  fi
fi

cargo build -q --workspace --bins
BIN=$(pwd)/target/debug

unpack() {
  rm -rf "$WORK/$1"
  mkdir -p "$WORK/$1"
  tar xzf "$archive" -C "$WORK/$1" --strip-components=1
}

run() { # NAME ENGINE [ARGS…]
  local name=$1
  shift
  unpack "$name"
  "$BIN/slt_diff" run "$@" "$WORK/$name" "$WORK/$name.jsonl" 2>"$WORK/$name.log"
}

run datafusion --engine datafusion
run datafusion-again --engine datafusion
run shoal --engine shoal
echo "# embedded Shoal (3 workers, 7 partitions) against DataFusion $VERSION"
"$BIN/slt_diff" compare "$WORK/shoal.jsonl" "$WORK/datafusion.jsonl" "$WORK/datafusion-again.jsonl" \
  | tee "$WORK/embedded.txt"

if [ -n "${CLUSTER:-}" ]; then
  "$BIN/shoal" scheduler --bind 127.0.0.1:0 >"$WORK/scheduler.out" 2>"$WORK/scheduler.log" &
  pids=($!)
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    [ -s "$WORK/scheduler.out" ] && break
    sleep 0.1
  done
  url=$(head -1 "$WORK/scheduler.out" | awk '{print $NF}')
  for i in 1 2; do
    "$BIN/shoal" worker --scheduler "$url" >/dev/null 2>"$WORK/worker$i.log" &
    pids+=($!)
  done
  run shoal-cluster --engine shoal --cluster "$url"
  echo
  echo "# Shoal on a cluster of two worker processes against DataFusion $VERSION"
  "$BIN/slt_diff" compare "$WORK/shoal-cluster.jsonl" "$WORK/datafusion.jsonl" \
    "$WORK/datafusion-again.jsonl" | tee "$WORK/cluster.txt"
fi
