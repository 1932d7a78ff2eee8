#!/usr/bin/env bash
# Soak: a steady mixed load against the built binary on a redb data file, with the bounds of
# bench/soak.toml (storage.cache_mb = 32, storage.max_outcomes = 200000). Every 30 s one line:
# the hub's RSS and open fds, the data file's size, the outcomes stored, and the p99 of
# matches and of durable writes. The load (examples/soak.rs): 1,000 miners heartbeating every
# 8 s, 300 matches/s with an outcome for both miners offered, one registration and one
# deregistration a second.
# Usage: bench/soak.sh [MINUTES] [MATCHES_PER_SECOND]
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-60}
RATE=${2:-300}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release --quiet --bin poolhub --example soak
BIN=target/release

echo "# poolhub soak: $(date -u +%FT%TZ), $(nproc) cores, $MINUTES min, $RATE matches/s, config bench/soak.toml"
$BIN/poolhub check-config --config bench/soak.toml --miners 1000 2>&1 | grep -i "memory" || true
$BIN/poolhub serve --config bench/soak.toml --data "$WORK/hub.redb" >/dev/null &
PID=$!
sleep 1
$BIN/examples/soak http://127.0.0.1:8000 http://127.0.0.1:9090/metrics "$PID" "$WORK/hub.redb" "$MINUTES" --rate "$RATE"
kill -TERM $PID; wait $PID 2>/dev/null || true
