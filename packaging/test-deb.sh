#!/usr/bin/env bash
# Checks a poolhub .deb (default: the newest target/debian/poolhub_*.deb):
#   1. metadata, contents, conffiles and maintainer scripts (dpkg-deb);
#   2. the packaged files work: extracted binary, config and unit (check-config with the unit's
#      environment, a real start/stop, the unit's exposure score when systemd-analyze exists);
#   3. as root: a real `dpkg -i`, reinstall and `dpkg --purge` in a throwaway copy of this
#      system's root (an overlay on / in a private mount namespace; the host is not touched);
#   4. with --boot, as root with systemd-nspawn (Debian package systemd-container): boots
#      systemd in a container on such a throwaway root with the package installed, and checks
#      the unit for real: readiness and status, the dynamic user, no capabilities, seccomp, the
#      watchdog (a drop-in shortens WatchdogSec to 2 s), systemctl reload, online backup, stop/start,
#      backup.
# Prints one line per check and exits 1 if any failed.
#
#   packaging/test-deb.sh [--boot] [path/to/poolhub.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

BOOT=0
if [ "${1:-}" = "--boot" ]; then
  BOOT=1
  shift
fi
DEB=${1:-$(ls -t target/debian/poolhub_*.deb 2>/dev/null | head -n1 || true)}
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then
  echo "test-deb: no .deb found; build one with packaging/build-deb.sh" >&2
  exit 1
fi
DEB=$(readlink -f "$DEB")
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
WORK=$(mktemp -d)
HUB_PID=
cleanup() {
  if [ -n "$HUB_PID" ]; then kill "$HUB_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fails=0
checks=0
check() {
  local what=$1
  shift
  checks=$((checks + 1))
  if "$@" >/dev/null 2>&1; then
    echo "ok   $what"
  else
    echo "FAIL $what"
    fails=$((fails + 1))
  fi
}
echo "test-deb: $DEB"

# --- 1. metadata, contents, control files -----------------------------------------------
field() { dpkg-deb --field "$DEB" "$1"; }
check "Package: poolhub" test "$(field Package)" = poolhub
check "Version: $VERSION-1" test "$(field Version)" = "$VERSION-1"
check "Architecture: amd64" test "$(field Architecture)" = amd64
check "no Depends (static binary)" test -z "$(field Depends)"
check "has a Maintainer and a Description" test -n "$(field Maintainer)" -a -n "$(field Description)"

dpkg-deb --contents "$DEB" >"$WORK/contents"
has() { grep -Eq "$1" "$WORK/contents"; }
check "/usr/bin/poolhub, mode 0755" has '^-rwxr-xr-x .* \./usr/bin/poolhub$'
check "/usr/lib/systemd/system/poolhub.service, mode 0644" \
  has '^-rw-r--r-- .* \./usr/lib/systemd/system/poolhub\.service$'
check "/etc/poolhub/poolhub.toml" has '^-rw-r--r-- .* \./etc/poolhub/poolhub\.toml$'
check "/usr/share/doc/poolhub/README.md" has ' \./usr/share/doc/poolhub/README\.md$'
check "/usr/share/doc/poolhub/copyright" has ' \./usr/share/doc/poolhub/copyright$'
stray() {
  awk '{print $NF}' "$WORK/contents" | grep -Ev \
    '^\./($|usr/$|usr/bin/($|poolhub$)|usr/lib/$|usr/lib/systemd/($|system/($|poolhub\.service$))|etc/$|etc/poolhub/($|poolhub\.toml$)|usr/share/($|doc/($|poolhub/($|README\.md$|copyright$))))'
}
check "no other files" test -z "$(stray)"

dpkg-deb --control "$DEB" "$WORK/control"
C=$WORK/control
check "conffiles is exactly /etc/poolhub/poolhub.toml" test "$(cat "$C/conffiles")" = /etc/poolhub/poolhub.toml
check "postinst enables poolhub.service" grep -q 'deb-systemd-helper enable poolhub.service' "$C/postinst"
check "postinst starts it only when systemd runs" \
  sh -c "grep -q 'deb-systemd-invoke .*poolhub.service' '$C/postinst' && grep -q '_dh_action=start' '$C/postinst' && grep -q '/run/systemd/system' '$C/postinst'"
check "prerm stops it" grep -q 'deb-systemd-invoke stop.*poolhub.service' "$C/prerm"
check "postrm purges the enablement state" grep -q 'deb-systemd-helper purge.*poolhub.service' "$C/postrm"
check "postrm deletes the data on purge" grep -q 'rm -rf /var/lib/private/poolhub /var/lib/poolhub' "$C/postrm"
for s in postinst prerm postrm; do
  check "$s is executable and valid sh" sh -c "test -x '$C/$s' && sh -n '$C/$s'"
done
check "no #DEBHELPER# token left" sh -c "! grep -l '#DEBHELPER#' '$C'/*"

# --- 2. the packaged files work --------------------------------------------------------
R=$WORK/root
dpkg-deb -x "$DEB" "$R"
BIN=$R/usr/bin/poolhub
UNIT=$R/usr/lib/systemd/system/poolhub.service
CONF=$R/etc/poolhub/poolhub.toml
if command -v file >/dev/null; then
  check "binary is statically linked" sh -c "file -b '$BIN' | grep -Eq 'statically linked|static-pie linked'"
fi
check "poolhub --version prints $VERSION" test "$("$BIN" --version)" = "poolhub $VERSION"
DB_PATH=$(sed -n 's/^Environment=POOLHUB_DB_PATH=//p' "$UNIT")
check "unit keeps the data in /var/lib/poolhub (StateDirectory)" \
  sh -c "test '$DB_PATH' = /var/lib/poolhub/poolhub.redb && grep -qx 'StateDirectory=poolhub' '$UNIT'"
check "unit runs the packaged binary with the packaged config" \
  grep -qx 'ExecStart=/usr/bin/poolhub serve --config /etc/poolhub/poolhub.toml' "$UNIT"
check "check-config accepts the packaged config with the unit's environment" \
  sh -c "env -i POOLHUB_DB_PATH='$DB_PATH' '$BIN' check-config --config '$CONF' >'$WORK/effective.toml'"
check "effective storage.path is the unit's" grep -qx "path = \"$DB_PATH\"" "$WORK/effective.toml"

# Start the packaged binary as the unit would (data path from the environment), on free ports.
mkdir -p "$WORK/state"
env -i POOLHUB_DB_PATH="$WORK/state/poolhub.redb" LOG_LEVEL=warn \
  "$BIN" serve --config "$CONF" --host 127.0.0.1 --port 0 >"$WORK/hub.out" 2>"$WORK/hub.err" &
HUB_PID=$!
for _ in $(seq 1 100); do
  [ -s "$WORK/hub.out" ] && break
  sleep 0.05
done
ADDR=$(head -n1 "$WORK/hub.out")
check "serve prints its address" sh -c "echo '$ADDR' | grep -Eq '^http://127\.0\.0\.1:[0-9]+$'"
if command -v curl >/dev/null; then
  check "GET /health answers ok" sh -c "curl -sf '$ADDR/health' | grep -q '\"ok\"'"
fi
kill -TERM "$HUB_PID"
rc=0
wait "$HUB_PID" || rc=$?
HUB_PID=
check "SIGTERM stops it with exit 0" test "$rc" = 0
check "it wrote its data where POOLHUB_DB_PATH says" test -s "$WORK/state/poolhub.redb"
check "backup of the stopped hub's file works" \
  "$BIN" backup --data "$WORK/state/poolhub.redb" "$WORK/backup.redb"

if command -v systemd-analyze >/dev/null; then
  score=$(systemd-analyze security --offline=yes "$UNIT" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "     unit exposure score: ${score:-?}"
  check "unit exposure score <= 2.0" awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 2.0) }'
else
  echo "skip unit exposure score (no systemd-analyze)"
fi

# --- 3. real install and purge in a throwaway root --------------------------------------
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null || ! command -v chroot >/dev/null; then
  echo "skip install into a throwaway root (needs root, unshare and chroot)"
else
  set +e
  DEB="$DEB" VERSION="$VERSION" unshare -m --propagation private bash -s >"$WORK/install.log" 2>&1 <<'INNER'
set -u
T=$(mktemp -d)
M=$T/root
mount -t tmpfs tmpfs "$T" || exit 90
mkdir -p "$T/upper" "$T/work" "$M"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$M" || exit 90
mount --bind /dev "$M/dev" || exit 90
mount -t proc proc "$M/proc" || exit 90
mount -t tmpfs tmpfs "$M/run" || exit 90   # no /run/systemd/system: nothing is started
mount -t tmpfs tmpfs "$M/tmp" || exit 90
cp "$DEB" "$M/tmp/poolhub.deb"
inroot() { chroot "$M" "$@"; }
ok=0; bad=0
c() { local w=$1; shift; if "$@" >/dev/null 2>&1; then echo "ok   $w"; ok=$((ok+1)); else echo "FAIL $w"; bad=$((bad+1)); fi; }
c "dpkg -i installs the package" inroot dpkg -i /tmp/poolhub.deb
c "dpkg reports it installed" sh -c "chroot '$M' dpkg-query -W -f='\${Status} \${Version}' poolhub | grep -qx 'install ok installed $VERSION-1'"
c "/usr/bin/poolhub runs" inroot /usr/bin/poolhub --version
c "the service is enabled (multi-user.target.wants)" \
  sh -c "readlink '$M/etc/systemd/system/multi-user.target.wants/poolhub.service' | grep -q 'systemd/system/poolhub.service$'"
c "check-config accepts /etc/poolhub/poolhub.toml" \
  inroot env POOLHUB_DB_PATH=/var/lib/poolhub/poolhub.redb /usr/bin/poolhub check-config --config /etc/poolhub/poolhub.toml
c "dpkg knows the conffile" sh -c "chroot '$M' dpkg-query -W -f='\${Conffiles}' poolhub | grep -q '/etc/poolhub/poolhub.toml'"
echo '# local change' >>"$M/etc/poolhub/poolhub.toml"
c "reinstall (upgrade path) succeeds" inroot dpkg -i /tmp/poolhub.deb
c "reinstall keeps the operator's config change" grep -q '^# local change' "$M/etc/poolhub/poolhub.toml"
# What systemd's StateDirectory= with DynamicUser= would have created.
mkdir -p "$M/var/lib/private/poolhub" && ln -s private/poolhub "$M/var/lib/poolhub" && echo x >"$M/var/lib/private/poolhub/poolhub.redb"
c "dpkg -r removes the package" inroot dpkg -r poolhub
c "remove keeps the data" test -f "$M/var/lib/private/poolhub/poolhub.redb"
c "remove keeps the config" test -f "$M/etc/poolhub/poolhub.toml"
c "dpkg --purge purges it" inroot dpkg --purge poolhub
c "purge deletes the binary, unit, config and enablement" sh -c "! test -e '$M/usr/bin/poolhub' && ! test -e '$M/usr/lib/systemd/system/poolhub.service' && ! test -e '$M/etc/poolhub' && ! test -L '$M/etc/systemd/system/multi-user.target.wants/poolhub.service'"
c "purge deletes the data" sh -c "! test -e '$M/var/lib/private/poolhub' && ! test -L '$M/var/lib/poolhub'"
echo "inner: $ok ok, $bad failed"
[ "$bad" = 0 ]
INNER
  rc=$?
  set -e
  if [ "$rc" = 90 ]; then
    echo "skip install into a throwaway root (cannot mount an overlay here)"
  else
    grep -E '^(ok|FAIL) ' "$WORK/install.log" || true
    n_ok=$(grep -c '^ok ' "$WORK/install.log" || true)
    n_bad=$(grep -c '^FAIL ' "$WORK/install.log" || true)
    checks=$((checks + n_ok + n_bad))
    fails=$((fails + n_bad))
    if [ "$rc" != 0 ] && [ "$n_bad" = 0 ]; then
      echo "FAIL install in a throwaway root (exit $rc):"
      sed 's/^/     /' "$WORK/install.log"
      checks=$((checks + 1))
      fails=$((fails + 1))
    fi
  fi
fi

# --- 4. boot systemd with the package installed (--boot) ---------------------------------
if [ "$BOOT" != 1 ]; then
  echo "skip booting the unit under systemd (pass --boot)"
elif [ "$(id -u)" != 0 ] || ! command -v systemd-nspawn >/dev/null; then
  echo "FAIL --boot needs root and systemd-nspawn (apt-get install systemd-container)"
  checks=$((checks + 1))
  fails=$((fails + 1))
else
  set +e
  DEB="$DEB" unshare -m --propagation private bash -s >"$WORK/boot.log" 2>&1 <<'INNER'
set -u
T=$(mktemp -d)
M=$T/root
mount -t tmpfs tmpfs "$T" || exit 90
mkdir -p "$T/upper" "$T/work" "$M"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$M" || exit 90
mount -t tmpfs tmpfs "$M/tmp" && mount -t tmpfs tmpfs "$M/run" || exit 90
mount --bind /dev "$M/dev" && mount -t proc proc "$M/proc" || exit 90
cp "$DEB" "$M/tmp/poolhub.deb"
chroot "$M" dpkg -i /tmp/poolhub.deb >/dev/null || { echo "FAIL dpkg -i before boot"; exit 1; }
umount "$M/proc" "$M/dev"
mkdir -p "$M/etc/systemd/system/poolhub.service.d"
printf '[Service]\nWatchdogSec=2s\nEnvironment=POOLHUB_ADMIN_TOKEN=boot-check-admin-secret-0001\n' >"$M/etc/systemd/system/poolhub.service.d/test.conf"
cat >"$M/usr/local/sbin/poolhub-boot-check" <<'EOS'
#!/bin/bash
exec >/var/log/poolhub-boot-check.txt 2>&1
c() { local w=$1; shift; if "$@" >/dev/null 2>&1; then echo "ok   boot: $w"; else echo "FAIL boot: $w"; fi; }
prop() { systemctl show -p "$1" --value poolhub; }
for _ in $(seq 1 100); do [ "$(prop ActiveState)" = active ] && break; sleep 0.1; done
c "poolhub.service is active (running) after boot" test "$(prop SubState)" = running
c "it reported ready with a status line" sh -c "systemctl show -p StatusText --value poolhub | grep -q '^serving API on 0.0.0.0:8000'"
c "it is enabled" systemctl is-enabled poolhub
pid=$(prop MainPID)
c "it runs as the dynamic user poolhub, not root" sh -c "test \"\$(stat -c %U /proc/$pid)\" = poolhub"
c "no capabilities, no new privileges, seccomp on" sh -c "grep -q '^CapEff:[[:space:]]*0000000000000000' /proc/$pid/status && grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$pid/status && grep -q '^Seccomp:[[:space:]]*2' /proc/$pid/status"
c "GET /health answers ok" sh -c "curl -sf -m 3 localhost:8000/health | grep -q '\"ok\"'"
c "metrics answer on 9090" sh -c "curl -sf -m 3 localhost:9090/metrics | grep -q '^poolhub_miners_total'"
c "register a miner" sh -c "curl -sf -m 3 -X POST localhost:8000/api/v1/miners/register -d '{\"address\":\"0x52908400098527886e0f7030069857d2e4169ee7\",\"endpoint\":\"http://m.example.com:8080\",\"capabilities\":{\"models\":[\"m\"],\"gpu_memory\":16384,\"max_concurrent_jobs\":4}}'"
c "the data is in the state directory" sh -c "test -s /var/lib/private/poolhub/poolhub.redb && test \"\$(stat -c %U /var/lib/private/poolhub/poolhub.redb)\" = poolhub"
sleep 6
c "watchdog (2 s) kept it alive for 6 s: no restart" sh -c "test \"\$(systemctl show -p NRestarts --value poolhub)\" = 0 && test \"\$(systemctl show -p MainPID --value poolhub)\" = $pid"
sed -i 's/^latency = .*/latency = 0.2/; s/^reputation = .*/reputation = 0.2/' /etc/poolhub/poolhub.toml
c "systemctl reload applies new weights without a restart" sh -c "systemctl reload poolhub && sleep 1 && test \"\$(systemctl show -p MainPID --value poolhub)\" = $pid && systemctl is-active poolhub && curl -sf -m 3 localhost:8000/api/v1/status | grep -q '\"reputation\":0.2' && journalctl -u poolhub --no-pager | grep -q 'configuration reloaded'"
c "the reload counted as ok" sh -c "curl -sf -m 3 localhost:9090/metrics | grep -q '^poolhub_config_reloads_total{result=\"ok\"} 1'"
c "online backup of the running hub (backup --hub), checked" sh -c "POOLHUB_ADMIN_TOKEN=boot-check-admin-secret-0001 poolhub backup --hub http://127.0.0.1:8000 /root/online.redb && test \"\$(stat -c %a /root/online.redb)\" = 600 && ! ls -A /var/lib/private/poolhub | grep -q poolhub-backup"
c "backup refuses while it runs" sh -c "! poolhub backup --data /var/lib/poolhub/poolhub.redb /root/b0.redb && ! test -e /root/b0.redb"
c "systemctl stop: clean exit 0" sh -c "systemctl stop poolhub && test \"\$(systemctl show -p Result --value poolhub)\" = success && test \"\$(systemctl show -p ExecMainStatus --value poolhub)\" = 0"
c "backup of the stopped hub" poolhub backup --data /var/lib/poolhub/poolhub.redb /root/b1.redb
c "systemctl start: the miner is still there" sh -c "systemctl start poolhub && curl -sf -m 3 localhost:8000/api/v1/miners/0x52908400098527886e0f7030069857d2e4169ee7"
score=$(systemd-analyze security poolhub 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
c "exposure score ${score:-?} <= 2.0" awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 2.0) }'
journalctl -u poolhub --no-pager -n 30 | sed 's/^/     /'
systemctl poweroff
EOS
chmod 755 "$M/usr/local/sbin/poolhub-boot-check"
printf '[Unit]\nAfter=poolhub.service\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/poolhub-boot-check\n' \
  >"$M/etc/systemd/system/poolhub-boot-check.service"
# Boot only what the unit needs (not every service this host's root has enabled).
printf '[Unit]\nRequires=basic.target poolhub.service poolhub-boot-check.service\nAfter=basic.target poolhub.service\n' \
  >"$M/etc/systemd/system/poolhub-test.target"
had_nspawn_dir=0
[ -d /run/systemd/nspawn ] && had_nspawn_dir=1
timeout -k 10 120 systemd-nspawn -q -D "$M" --boot --private-network --register=no --keep-unit \
  --machine="poolhub-test-$$" -- systemd.unit=poolhub-test.target >"$T/console.log" 2>&1 </dev/null
cat "$M/var/log/poolhub-boot-check.txt" 2>/dev/null || { echo "FAIL boot: no check log"; tail -n 40 "$T/console.log"; }
[ "$had_nspawn_dir" = 1 ] || rm -rf /run/systemd/nspawn
exit 0
INNER
  rc=$?
  set -e
  if [ "$rc" = 90 ]; then
    echo "FAIL --boot: cannot mount an overlay here"
    checks=$((checks + 1))
    fails=$((fails + 1))
  else
    grep -E '^(ok|FAIL) |^     ' "$WORK/boot.log" | grep -Ev '^     ' || true
    n_ok=$(grep -c '^ok ' "$WORK/boot.log" || true)
    n_bad=$(grep -c '^FAIL ' "$WORK/boot.log" || true)
    checks=$((checks + n_ok + n_bad))
    fails=$((fails + n_bad))
    if [ "$n_bad" != 0 ]; then sed 's/^/     /' "$WORK/boot.log" | tail -n 40; fi
    if [ "$n_ok" = 0 ] && [ "$n_bad" = 0 ]; then
      echo "FAIL boot: no result"
      sed 's/^/     /' "$WORK/boot.log"
      checks=$((checks + 1))
      fails=$((fails + 1))
    fi
  fi
fi

echo "$((checks - fails)) passed, $fails failed"
[ "$fails" = 0 ]
