#!/usr/bin/env bash
# Loopback load test of the storage backends, same binary, same machine, same run: match,
# status update and durable registration throughput with the embedded default (redb file +
# moka) against PostgreSQL + Redis. Needs wrk, psql and redis-cli, and the servers below.
# Usage: bench/load-backends.sh [N] [DURATION] [CONNECTIONS]
#   POOLHUB_BENCH_DATABASE_URL  (default postgresql://postgres@127.0.0.1:5432/test)
#   POOLHUB_BENCH_REDIS_URL     (default redis://127.0.0.1:6379)
#   PORT (default 18000; metrics on PORT+1, so it does not collide with bench/load.sh)
#   SKIP_BUILD=1 BIN_DIR=DIR    use already-built binaries (poolhub, examples/seed) in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
DUR=${2:-10s}
C=${3:-64}
PORT=${PORT:-18000}
HUB=http://127.0.0.1:$PORT
PG=${POOLHUB_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
RD=${POOLHUB_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
WORK=$(mktemp -d)
TAG=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
SCHEMA="bench_$TAG"
PREFIX="bench:$TAG:"
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  psql "$PG" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
  redis-cli -u "$RD" --scan --pattern "poolhub:$PREFIX*" 2>/dev/null | xargs -r -n 500 redis-cli -u "$RD" DEL >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet --bin poolhub --example seed
fi
BIN=${BIN_DIR:-target/release}

rate() { awk '/Requests\/sec/ {print $2}'; }
lat() { awk '/Latency/ {print $2" avg, "$4" max"; exit}'; }
non2xx() { awk '/Non-2xx/ {print " ("$4" non-2xx)"}'; }

echo "# poolhub backends load test: $(date -u +%FT%TZ), $(nproc) cores, wrk -t1 -c$C -d$DUR, N=$N miners"

run() {
  local name=$1 storage=$2
  { cat bench/load.toml; printf '\n[storage]\n%s\n' "$storage"; } >"$WORK/$name.toml"
  API_PORT=$PORT METRICS_PORT=$((PORT + 1)) $BIN/poolhub serve --config "$WORK/$name.toml" >/dev/null 2>"$WORK/$name.log" &
  local pid=$!
  for _ in $(seq 1 100); do
    curl -sf $HUB/health >/dev/null && break
    sleep 0.1
  done
  curl -sf $HUB/health >/dev/null || { echo "$name: hub did not become healthy"; cat "$WORK/$name.log"; exit 1; }
  $BIN/examples/seed $HUB "$N" "$WORK/$name.tokens" 2>&1 | sed "s/^/$name seed: /"
  local out
  out=$(wrk -t1 -c"$C" -d"$DUR" -s bench/match.lua $HUB/api/v1/match)
  echo "$name  match:        $(echo "$out" | rate) req/s  latency $(echo "$out" | lat)$(echo "$out" | non2xx)"
  out=$(TOKENS="$WORK/$name.tokens" wrk -t1 -c"$C" -d"$DUR" -s bench/status.lua $HUB)
  echo "$name  status:       $(echo "$out" | rate) req/s  latency $(echo "$out" | lat)$(echo "$out" | non2xx)"
  out=$(wrk -t1 -c"$C" -d"$DUR" -s bench/register.lua $HUB)
  echo "$name  registration: $(echo "$out" | rate) req/s  latency $(echo "$out" | lat)$(echo "$out" | non2xx)"
  kill $pid; wait $pid 2>/dev/null || true
}

run embedded "durable = \"redb\"
hot = \"moka\"
path = \"$WORK/hub.redb\""

run pg+redis "durable = \"postgres\"
database_url = \"$PG\"
postgres_schema = \"$SCHEMA\"
hot = \"redis\"
redis_url = \"$RD\"
redis_prefix = \"$PREFIX\""
