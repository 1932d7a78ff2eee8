#!/usr/bin/env bash
# A/B of two hub builds on this machine: the match load at N miners, alternating runs, so
# that a machine's drift over the day is not mistaken for a change in the code.
#
# Usage: bench/ab.sh OLD_BIN NEW_BIN [N] [ROUNDS]
#   e.g. git worktree add /tmp/old <rev> && (cd /tmp/old && cargo build --release) &&
#        bench/ab.sh /tmp/old/target/release/poolhub target/release/poolhub 100000 2
# Needs wrk, curl, and target/release/examples/seed (cargo build --release --example seed).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 N=${3:-100000} ROUNDS=${4:-2}
TCK=$(getconf CLK_TCK)
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
one() {
  local bin=$1 tag=$2 work pid t0 t1 out
  work=$(mktemp -d)
  "$bin" serve --ephemeral --config bench/load.toml >/dev/null 2>"$work/log" &
  pid=$!
  for _ in $(seq 1 100); do curl -sf 127.0.0.1:8000/health >/dev/null && break; sleep 0.05; done
  target/release/examples/seed http://127.0.0.1:8000 "$N" "$work/tokens" >/dev/null 2>&1
  wrk -t1 -c64 -d2s -s bench/match.lua http://127.0.0.1:8000/api/v1/match >/dev/null
  t0=$(ticks "$pid")
  out=$(wrk -t1 -c64 -d10s --latency -s bench/match.lua http://127.0.0.1:8000/api/v1/match)
  t1=$(ticks "$pid")
  echo "$out" | awk -v tag="$tag" -v dt=$((t1 - t0)) -v tck="$TCK" '
    / requests in / {n = $1} /^Requests\/sec/ {r = $2} /^ +99%/ {p = $2}
    END {printf "%s: %s req/s, p99 %s, %.1f us CPU per request\n", tag, r, p, dt / tck * 1e6 / n}'
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
echo "match at $N miners, $(nproc) cores, $ROUNDS alternating rounds"
for _ in $(seq 1 "$ROUNDS"); do
  one "$OLD" old
  one "$NEW" new
done
