#!/usr/bin/env bash
# Builds the static (musl) poolhub binary and a .deb from it with cargo-deb.
#
#   packaging/build-deb.sh            -> target/debian/poolhub_<version>-1_amd64.deb
#
# Installs what it needs when missing: the musl target (rustup), musl-gcc (Debian's musl-tools,
# to compile mimalloc, the static build's allocator; see .cargo/config.toml) and cargo-deb
# (cargo install). Check the result with packaging/test-deb.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
OUT=target/debian

if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "== rustup target add $TARGET"
  rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null; then
  echo "== apt-get install musl-tools"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== cargo install cargo-deb --locked"
  cargo install cargo-deb --locked
fi

echo "== cargo build --release --target $TARGET"
cargo build --release --locked --target "$TARGET"
BIN="target/$TARGET/release/poolhub"
if command -v file >/dev/null; then
  info=$(file -b "$BIN")
  echo "$BIN: $info"
  case "$info" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) echo "build-deb: $BIN is not statically linked" >&2; exit 1 ;;
  esac
fi
echo "$BIN: $(stat -c %s "$BIN") bytes"

echo "== cargo deb --target $TARGET --no-build"
mkdir -p "$OUT"
cargo deb --target "$TARGET" --no-build --no-strip --output "$OUT" | tail -n 1
ls -l "$OUT"/poolhub_*.deb
