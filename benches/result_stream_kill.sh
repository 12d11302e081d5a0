#!/usr/bin/env bash
# A client streams `select l_orderkey, l_partkey, l_comment from lineitem` from a scheduler
# and two workers (--cpus 1 --memory 2GiB) on 127.0.0.1; one worker is SIGKILLed DELAY
# seconds after the query starts and a replacement is started at once. The rows the
# client wrote are then compared with an embedded run: same count, same checksum of the
# sorted lines.
#
#   benches/result_stream_kill.sh [DATA_DIR] [DELAY]      (defaults: data/sf1 0.5)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-data/sf1}
delay=${2:-0.5}
shoal=${SHOAL:-target/release/shoal}
query="select l_orderkey, l_partkey, l_comment from lineitem"
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
url=http://127.0.0.1:$port
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$shoal" scheduler --bind 127.0.0.1:$port >"$work/scheduler.log" 2>&1 &
pids+=($!)
sleep 0.5
worker() { "$shoal" worker --scheduler "$url" --cpus 1 --memory 2GiB >>"$work/workers.log" 2>&1 & pids+=($!); }
worker
victim=$!
worker
sleep 1

start=$(date +%s.%N)
"$shoal" sql --cluster "$url" --tables "$data" --format csv -c "$query" >"$work/cluster.csv" &
client=$!
sleep "$delay"
kill -9 "$victim"
worker
wait "$client"
end=$(date +%s.%N)

"$shoal" sql --tables "$data" --format csv -c "$query" >"$work/embedded.csv"
rows_cluster=$(($(wc -l <"$work/cluster.csv") - 1))
rows_embedded=$(($(wc -l <"$work/embedded.csv") - 1))
sum_cluster=$(sort "$work/cluster.csv" | md5sum | cut -d' ' -f1)
sum_embedded=$(sort "$work/embedded.csv" | md5sum | cut -d' ' -f1)
echo "killed a worker at ${delay} s; the query took $(echo "$end - $start" | bc) s"
echo "rows:     cluster $rows_cluster, embedded $rows_embedded"
echo "checksum: cluster $sum_cluster, embedded $sum_embedded"
grep -h "lost result partition" "$work/scheduler.log" | sed 's/^.*WARN [^ ]* //' || true
[ "$rows_cluster" = "$rows_embedded" ] && [ "$sum_cluster" = "$sum_embedded" ]
