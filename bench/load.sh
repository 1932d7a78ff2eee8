#!/usr/bin/env bash
# Loopback load test: a bare hyper server (the yardstick) against poolhub's match and status
# update at N registered miners, and durable registrations against the disk's fsync rate.
# Needs wrk (apt-get install wrk). Usage: bench/load.sh [N] [DURATION] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
DUR=${2:-10s}
C=${3:-64}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --quiet --bin poolhub --example bare_hyper --example seed
BIN=target/release

rate() { awk '/Requests\/sec/ {print $2}'; }
lat() { awk '/Latency/ {print $2" avg, "$4" max"; exit}'; }

echo "# poolhub load test: $(date -u +%FT%TZ), $(nproc) cores, wrk -t1 -c$C -d$DUR, N=$N miners"

$BIN/examples/bare_hyper 127.0.0.1:8088 >/dev/null &
PID=$!
sleep 0.5
out=$(wrk -t1 -c"$C" -d"$DUR" -s bench/match.lua http://127.0.0.1:8088/api/v1/match)
echo "bare hyper (fixed response):     $(echo "$out" | rate) req/s  latency $(echo "$out" | lat)"
kill $PID; wait $PID 2>/dev/null || true

$BIN/poolhub serve --ephemeral --config bench/load.toml >/dev/null &
PID=$!
sleep 0.5
TOKENS="$WORK/tokens.txt" $BIN/examples/seed http://127.0.0.1:8000 "$N" "$WORK/tokens.txt" 2>&1 | sed 's/^/seed: /'
out=$(wrk -t1 -c"$C" -d"$DUR" -s bench/match.lua http://127.0.0.1:8000/api/v1/match)
echo "poolhub match ($N miners):    $(echo "$out" | rate) req/s  latency $(echo "$out" | lat)"
out=$(TOKENS="$WORK/tokens.txt" wrk -t1 -c"$C" -d"$DUR" -s bench/status.lua http://127.0.0.1:8000)
echo "poolhub status update:           $(echo "$out" | rate) req/s  latency $(echo "$out" | lat)"
curl -s http://127.0.0.1:8000/api/v1/status | python3 -c 'import json,sys; s=json.load(sys.stdin); print("hub after run:", s["miners"], "matches_served", s["matches_served"])'
kill $PID; wait $PID 2>/dev/null || true

# Durable writes: the disk's fsync rate, then registrations against a redb file.
python3 - "$WORK/fsync.bin" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
n, t0 = 0, time.time()
while time.time() - t0 < 2:
    os.pwrite(fd, b"x" * 4096, 0); os.fsync(fd); n += 1
print(f"disk fsync rate (4 KiB write + fsync, one thread): {n / (time.time() - t0):.0f}/s")
PY
$BIN/poolhub serve --config bench/load.toml --data "$WORK/hub.redb" >/dev/null &
sleep 0.5
out=$(wrk -t1 -c"$C" -d"$DUR" -s bench/register.lua http://127.0.0.1:8000)
echo "poolhub durable registrations:   $(echo "$out" | rate) req/s  latency $(echo "$out" | lat)"
curl -s http://127.0.0.1:9090/metrics | awk '/^poolhub_store_commit_batch_size_(sum|count)/ {v[$1]=$2} END {if (v["poolhub_store_commit_batch_size_count"]>0) printf "group commit: %d commits, %.1f writes per commit on average\n", v["poolhub_store_commit_batch_size_count"], v["poolhub_store_commit_batch_size_sum"]/v["poolhub_store_commit_batch_size_count"]}'
