#!/usr/bin/env bash
# What the trust model costs on the match path, same binary, same run: matches with clients
# open and no rate limits (the path as it was before client keys and limits) against matches
# with auth.clients = "keys" (a SHA-256 and a key-ring lookup per request) and a rate-limit
# bucket checked per request (set high enough never to refuse, so only the check is measured;
# the per-key reservation cap likewise set out of the way).
# Needs wrk. Usage: bench/trust-cost.sh [N] [DURATION] [CONNECTIONS]; SKIP_BUILD=1 to reuse
# target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
DUR=${2:-10s}
C=${3:-64}
PORT=${PORT:-18300}
HUB=http://127.0.0.1:$PORT
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin poolhub --example seed
BIN=target/release
ADMIN=trust-cost-admin-secret-0001
rate() { awk '/Requests\/sec/ {print $2}'; }
lat() { awk '/Latency/ {print $2" avg"; exit}'; }
non2xx() { awk '/Non-2xx/ {print " ("$4" non-2xx)"}'; }
echo "# trust cost on the match path: $(date -u +%FT%TZ), $(nproc) cores, wrk -t1 -c$C -d$DUR, N=$N"
run() {
  local name=$1 extra=$2
  printf '[server]\nhost = "127.0.0.1"\nlog_level = "warn"\n[matching]\nheartbeat_timeout = 3600\nreservation_ttl = 1\n%s\n' "$extra" >"$WORK/$name.toml"
  API_PORT=$PORT METRICS_PORT=$((PORT + 1)) POOLHUB_ADMIN_TOKEN=$ADMIN \
    $BIN/poolhub serve --ephemeral --config "$WORK/$name.toml" >/dev/null 2>"$WORK/$name.log" &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf $HUB/health >/dev/null && break; sleep 0.1; done
  $BIN/examples/seed $HUB "$N" "$WORK/$name.tokens" >/dev/null 2>&1
  local key
  key=$(curl -sf -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d '{"name":"bench","role":"client"}' $HUB/api/v1/admin/keys | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
  local out
  out=$(KEY=$key wrk -t1 -c"$C" -d"$DUR" -s bench/match-key.lua $HUB/api/v1/match)
  echo "$name: $(echo "$out" | rate) req/s  latency $(echo "$out" | lat)$(echo "$out" | non2xx)"
  kill $pid; wait $pid 2>/dev/null || true
}
run "open, no limits        " '[auth]
clients = "open"
[auth.rate_limits]
register = { per_second = 0, burst = 0 }
status = { per_second = 0, burst = 0 }
match = { per_second = 0, burst = 0 }
outcome = { per_second = 0, burst = 0 }
admin = { per_second = 0, burst = 0 }'
run "keys + rate-limit check" '[auth]
clients = "keys"
max_reservations_per_client = 1000000000
[auth.rate_limits]
register = { per_second = 0, burst = 0 }
status = { per_second = 0, burst = 0 }
match = { per_second = 100000000, burst = 100000000 }
outcome = { per_second = 0, burst = 0 }
admin = { per_second = 0, burst = 0 }'
