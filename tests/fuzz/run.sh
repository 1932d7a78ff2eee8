#!/usr/bin/env bash
# Fuzzes the running hub against its own OpenAPI document with schemathesis: every route,
# every check (server errors, status codes, content types, headers, response schemas,
# positive and negative data, authentication, methods), at least 1,000 generated requests.
# Fails when schemathesis finds anything, when fewer than 1,000 requests were generated, or
# when the hub logged a panic.
#
#   tests/fuzz/run.sh [BINARY]        (default: target/debug/poolhub)
#
# Needs schemathesis and openapi-spec-validator (pip install schemathesis
# openapi-spec-validator). One worker: with more, CPython 3.11.7 can fail parsing
# concurrently ("AST constructor recursion depth mismatch"). FUZZ_EXAMPLES (per operation,
# default 60) and FUZZ_SEED (default fixed, so a failure reproduces) tune the run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-target/debug/poolhub}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
examples=${FUZZ_EXAMPLES:-60}
seed=${FUZZ_SEED:-20261128}
work=$(mktemp -d)
hub_pid=
cleanup() {
    [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token=fuzz-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The document describes the hub it is served by: every optional route on, client keys
# required, rate limits off (a fuzzer is one very fast client), streams that end.
cat > "$work/poolhub.toml" <<TOML
[server]
host = "127.0.0.1"
port = $port
metrics_port = $mport
metrics_on_api_port = true
event_stream_max_age = 1
[storage]
ephemeral = true
[auth]
clients = "keys"
admin_token = "$token"
[auth.rate_limits]
register = { per_second = 0, burst = 0 }
status = { per_second = 0, burst = 0 }
match = { per_second = 0, burst = 0 }
outcome = { per_second = 0, burst = 0 }
admin = { per_second = 0, burst = 0 }
[matching]
heartbeat_timeout = 3600
[compat]
aitbc = true
TOML

(cd "$work" && exec "$bin" serve --config "$work/poolhub.toml" >"$work/hub.log" 2>&1) &
hub_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null

# Miners that serve the document's example model and stay online for the whole run, so
# the examples' matches offer miners and the match -> outcome link reaches real outcomes.
for i in 1 2 3; do
    a=$(printf '0x%040x' "$((0xf0220 + i))")
    tok=$(curl -fsS "http://127.0.0.1:$port/api/v1/miners/register" \
        -d "{\"address\":\"$a\",\"endpoint\":\"http://fuzz-miner-$i.example:8080\",\"capabilities\":{\"models\":[\"llama3.2\"],\"gpu_memory\":24576,\"max_concurrent_jobs\":1000}}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    curl -fsS "http://127.0.0.1:$port/api/v1/miners/$a/status" -H "Authorization: Bearer $tok" \
        -d '{"available":true,"current_load":0,"gpu_utilization":0.2,"temperature":60}' >/dev/null
done

# The document itself first: a valid OpenAPI 3.1 document (openapi-spec-validator).
curl -fsS "http://127.0.0.1:$port/api/v1/openapi.json" -o "$work/openapi.json"
python3 - "$work/openapi.json" <<'PY'
import json, sys
from openapi_spec_validator import validate
doc = json.load(open(sys.argv[1]))
validate(doc)
print(f"fuzz: the document is valid OpenAPI {doc['openapi']} ({len(doc['paths'])} paths)")
PY

status=0
(cd "$work" && schemathesis --config-file "$here/schemathesis.toml" run \
    "http://127.0.0.1:$port/api/v1/openapi.json" \
    -H "Authorization: Bearer $token" \
    --max-examples "$examples" --seed "$seed" --workers 1 \
    --request-timeout 10 --no-color) >"$work/report.txt" 2>&1 || status=$?

sed -n '/SUMMARY/,$p' "$work/report.txt"
generated=$(grep -Eo '[0-9]+ generated' "$work/report.txt" | grep -Eo '[0-9]+' | head -1)
if [ "$status" -ne 0 ]; then
    cat "$work/report.txt"
    echo "fuzz: schemathesis found problems (exit $status)" >&2
    exit 1
fi
if [ "${generated:-0}" -lt 1000 ]; then
    echo "fuzz: only ${generated:-0} requests generated; at least 1000 are required" >&2
    exit 1
fi
if grep -q "panicked" "$work/hub.log"; then
    grep -n "panicked" "$work/hub.log" >&2
    echo "fuzz: the hub panicked" >&2
    exit 1
fi
echo "fuzz: $generated requests, 0 failures, no panics"
