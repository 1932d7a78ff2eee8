#!/usr/bin/env bash
# Loopback load test: poolhub against a bare hyper server answering a fixed response (the
# yardstick, examples/bare_hyper.rs), side by side in one run on this machine.
#
# For every miner count it runs the same wrk load (-t1, one connection pool) at the
# yardstick and at the hub, for a match (the seed's body) and a status update, and prints
# throughput, p50 and p99 latency, the server process's CPU time per request (from
# /proc/PID/stat, so wrk's own CPU is not counted), and the hub/yardstick ratios. Then the
# durable writes (registration and outcome on a redb file, acknowledged after fsync, against
# the disk's fsync rate), the start-to-ready time and RSS with 100,000 miners on file, and,
# when the servers answer, matches on PostgreSQL + Redis against the embedded mode.
#
# Miners stay fresh: bench/load.toml sets heartbeat_timeout to an hour, and every run reports
# how many miners were still online after it ("online after").
#
# Needs wrk (apt-get install wrk), curl and python3.
# Usage: bench/load.sh [SIZES] [DURATION] [CONNECTIONS]
#   SIZES        miner counts, default "1000 10000 100000"
#   DURATION     per wrk run, default 10s
#   CONNECTIONS  default 64
#   SKIP_BUILD=1 BIN_DIR=DIR  use already-built binaries (poolhub, examples/{seed,bare_hyper})
#   READY_MINERS=N            miners on file for the start-to-ready run (default 100000)
#   POOLHUB_BENCH_DATABASE_URL / POOLHUB_BENCH_REDIS_URL  for the PostgreSQL + Redis row
#     (default the local servers; NO_BACKENDS=1 skips it)
#   PIN=1  servers on CPU 0, wrk on CPU 1 (taskset): the load generator no longer competes
#          with the server for a core, so latency tails measure the server rather than the
#          scheduler. Servers then have one core (and one tokio worker) each.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-"1000 10000 100000"}
DUR=${2:-10s}
C=${3:-64}
READY_MINERS=${READY_MINERS:-100000}
PG=${POOLHUB_BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
RD=${POOLHUB_BENCH_REDIS_URL:-redis://127.0.0.1:6379}
HUB=http://127.0.0.1:8000
BARE=http://127.0.0.1:8088
WORK=$(mktemp -d)
TAG=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${NO_BACKENDS:-0}" != 1 ]; then
    psql "$PG" -qc "DROP SCHEMA IF EXISTS bench_$TAG CASCADE" >/dev/null 2>&1 || true
    redis-cli -u "$RD" --scan --pattern "poolhub:bench:$TAG:*" 2>/dev/null |
      xargs -r -n 500 redis-cli -u "$RD" DEL >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet --bin poolhub --example bare_hyper --example seed
fi
BIN=${BIN_DIR:-target/release}
# PIN=1: servers and load generator on separate cores.
if [ "${PIN:-0}" = 1 ]; then SRV="taskset -c 0"; GEN="taskset -c 1"; else SRV=""; GEN=""; fi
TCK=$(getconf CLK_TCK)

# CPU time (user + system, in clock ticks) a process has used so far.
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }

wait_ready() {
  for _ in $(seq 1 200); do
    curl -sf "$1/health" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2
  return 1
}

# measure PID URL SCRIPT [ENV...]: a 2 s warm-up (not counted; none for outcomes, which use
# up their matches), then one wrk run; prints "req/s p50_us p99_us cpu_us non2xx".
measure() {
  local pid=$1 url=$2 script=$3
  shift 3
  local t0 t1 out
  [ "$script" = bench/outcome.lua ] || env "$@" $GEN wrk -t1 -c"$C" -d2s -s "$script" "$url" >/dev/null
  t0=$(ticks "$pid")
  out=$(env "$@" $GEN wrk -t1 -c"$C" -d"$DUR" --latency -s "$script" "$url")
  t1=$(ticks "$pid")
  echo "$out" | awk -v dt=$((t1 - t0)) -v tck="$TCK" '
    function us(v) {
      if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6
      return v
    }
    /^ +50%/ {p50 = us($2)} /^ +99%/ {p99 = us($2)}
    / requests in / {n = $1} /^Requests\/sec/ {rps = $2} /Non-2xx/ {bad = $5}
    END {printf "%.0f %.0f %.0f %.1f %d\n", rps, p50, p99, (n > 0 ? dt / tck * 1e6 / n : 0), bad + 0}'
}

online() { curl -s "$1/health" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("miners_online", "?"))'; }
rss() { awk '/^VmRSS/ {printf "%.0f MiB", $2 / 1024}' "/proc/$1/status"; }

# row LABEL BARE_RESULT HUB_RESULT [NOTE]: one line of the table, with the ratios.
row() {
  read -r brps bp50 bp99 bcpu _ <<<"$2"
  read -r hrps hp50 hp99 hcpu hbad <<<"$3"
  python3 - "$1" "$brps" "$bp50" "$bp99" "$bcpu" "$hrps" "$hp50" "$hp99" "$hcpu" "$hbad" "${4:-}" <<'PY'
import sys
l, brps, bp50, bp99, bcpu, hrps, hp50, hp99, hcpu, hbad, note = sys.argv[1:]
f = lambda x: float(x)
r = lambda a, b: f"{f(a) / f(b):.2f}" if f(b) > 0 else "-"
bad = f", {hbad} non-2xx" if int(hbad) else ""
print(f"| {l} | {f(brps):,.0f} | {f(hrps):,.0f} | **{r(hrps, brps)}** | {int(bp50)} / {int(bp99)} µs "
      f"| {int(hp50)} / {int(hp99)} µs | {r(hp99, bp99)} | {f(bcpu):.1f} µs | {f(hcpu):.1f} µs "
      f"| **{r(hcpu, bcpu)}** | {note}{bad} |")
PY
}

echo "# poolhub load test: $(date -u +%FT%TZ), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), wrk -t1 -c$C -d$DUR$([ "${PIN:-0}" = 1 ] && echo ', pinned: servers on CPU 0, wrk on CPU 1'), poolhub $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
echo "| run | yardstick req/s | hub req/s | throughput hub/yardstick | yardstick p50 / p99 | hub p50 / p99 | p99 hub/yardstick | yardstick CPU/req | hub CPU/req | CPU hub/yardstick | notes |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"

$SRV $BIN/examples/bare_hyper 127.0.0.1:8088 >/dev/null &
BPID=$!
wait_ready $BARE 2>/dev/null || sleep 0.5

declare -A EMBEDDED_MATCH
for N in $SIZES; do
  $SRV $BIN/poolhub serve --ephemeral --config bench/load.toml >/dev/null 2>"$WORK/hub-$N.log" &
  HPID=$!
  wait_ready $HUB
  $BIN/examples/seed $HUB "$N" "$WORK/tokens-$N.txt" 2>"$WORK/seed-$N.log"
  bm=$(measure $BPID $BARE/api/v1/match bench/match.lua)
  hm=$(measure $HPID $HUB/api/v1/match bench/match.lua)
  EMBEDDED_MATCH[$N]=$hm
  row "match, $N miners" "$bm" "$hm" "online after: $(online $HUB)"
  bs=$(measure $BPID $BARE bench/status.lua TOKENS="$WORK/tokens-$N.txt")
  hs=$(measure $HPID $HUB bench/status.lua TOKENS="$WORK/tokens-$N.txt")
  row "status update, $N miners" "$bs" "$hs" "online after: $(online $HUB); hub RSS $(rss $HPID)"
  kill $HPID
  wait $HPID 2>/dev/null || true
done

# Durable writes on a redb file: registrations, then outcomes for matches made beforehand.
python3 - "$WORK/fsync.bin" >"$WORK/fsync.txt" <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
n, t0 = 0, time.time()
while time.time() - t0 < 2:
    os.pwrite(fd, b"x" * 4096, 0); os.fsync(fd); n += 1
print(f"{n / (time.time() - t0):.0f}")
PY
$SRV $BIN/poolhub serve --config bench/load.toml --data "$WORK/durable.redb" >/dev/null 2>"$WORK/durable.log" &
HPID=$!
wait_ready $HUB
SECS=${DUR%s}
$BIN/examples/seed $HUB 1000 "$WORK/tokens-durable.txt" $((SECS * 35000)) "$WORK/matches.txt" 2>"$WORK/seed-durable.log"
shuf -o "$WORK/matches.txt" "$WORK/matches.txt"
br=$(measure $BPID $BARE bench/register.lua)
hr=$(measure $HPID $HUB bench/register.lua)
batch() {
  curl -s http://127.0.0.1:9090/metrics | awk '/^poolhub_store_commit_batch_size_(sum|count)/ {v[$1]=$2}
    END {c = v["poolhub_store_commit_batch_size_count"]; if (c > 0) printf "%.1f", v["poolhub_store_commit_batch_size_sum"] / c; else print "?"}'
}
row "durable registration" "$br" "$hr" "disk fsync $(cat "$WORK/fsync.txt")/s; writes per commit $(batch)"
bo=$(measure $BPID $BARE bench/outcome.lua MATCHES="$WORK/matches.txt")
ho=$(measure $HPID $HUB bench/outcome.lua MATCHES="$WORK/matches.txt")
row "durable outcome" "$bo" "$ho" "$(wc -l <"$WORK/matches.txt") matches made; writes per commit $(batch) (both runs)"
kill $HPID
wait $HPID 2>/dev/null || true

# PostgreSQL + Redis: matches against the embedded mode's figure at the same miner count.
if [ "${NO_BACKENDS:-0}" != 1 ]; then
  N=$(echo $SIZES | awk '{print $1}')
  {
    cat bench/load.toml
    printf '\n[storage]\ndurable = "postgres"\ndatabase_url = "%s"\npostgres_schema = "bench_%s"\nhot = "redis"\nredis_url = "%s"\nredis_prefix = "bench:%s:"\n' "$PG" "$TAG" "$RD" "$TAG"
  } >"$WORK/backends.toml"
  if $SRV $BIN/poolhub serve --config "$WORK/backends.toml" >/dev/null 2>"$WORK/backends.log" & HPID=$! && wait_ready $HUB 2>/dev/null; then
    $BIN/examples/seed $HUB "$N" "$WORK/tokens-pg.txt" 2>"$WORK/seed-pg.log"
    hp=$(measure $HPID $HUB/api/v1/match bench/match.lua)
    read -r erps _ <<<"${EMBEDDED_MATCH[$N]}"
    read -r prps pp50 pp99 pcpu pbad <<<"$hp"
    echo "| match, $N miners, PostgreSQL + Redis | | $prps | **$(python3 -c "print(f'{$prps / $erps:.2f}')")** of embedded ($erps) | | $pp50 / $pp99 µs | | | $pcpu µs | | online after: $(online $HUB); $pbad non-2xx |"
    kill $HPID
    wait $HPID 2>/dev/null || true
  else
    echo "(PostgreSQL + Redis row skipped: the hub did not start on $PG and $RD; see below)"
    tail -3 "$WORK/backends.log"
  fi
fi
kill $BPID

# Start to ready with READY_MINERS miners on file: the first stdout line, and /health 200.
$BIN/poolhub serve --config bench/load.toml --data "$WORK/ready.redb" >/dev/null 2>"$WORK/ready.log" &
HPID=$!
wait_ready $HUB
$BIN/examples/seed $HUB "$READY_MINERS" "$WORK/tokens-ready.txt" 2>"$WORK/seed-ready.log"
kill $HPID
wait $HPID 2>/dev/null || true
echo
python3 - "$BIN/poolhub" "$WORK/ready.redb" "$READY_MINERS" <<'PY'
import os, subprocess, sys, time, urllib.request
binary, data, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = []
for _ in range(3):
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "serve", "--config", "bench/load.toml", "--data", data],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    p.stdout.readline()
    line = time.monotonic() - t0
    while True:
        try:
            if urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=1).status == 200:
                break
        except Exception:
            time.sleep(0.002)
    health = time.monotonic() - t0
    rss = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1]
    runs.append((line, health, int(rss) / 1024))
    p.terminate(); p.wait()
size = os.path.getsize(data)
best = min(runs, key=lambda r: r[1])
print(f"start to ready with {n:,} miners on file (best of 3): first stdout line {best[0]*1000:.0f} ms, "
      f"/health 200 at {best[1]*1000:.0f} ms; RSS when ready {max(r[2] for r in runs):.0f} MiB; "
      f"redb file {size / 1e6:.1f} MB ({size / n:.0f} bytes per miner)")
PY
