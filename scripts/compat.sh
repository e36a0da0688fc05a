#!/usr/bin/env bash
# Builds and runs the tikv-client wire-compatibility test (compat/tikv-client) against a built
# rangekv binary: RANGEKV_BIN, by default the main workspace's debug build.
# The compat crate is its own workspace with its own target directory (see its README).
set -euo pipefail
cd "$(dirname "$0")/.."

main_target="${CARGO_TARGET_DIR:-/var/tmp/rangekv-target}"
[ "$main_target" = /var/tmp/rangekv-compat-target ] && main_target=/var/tmp/rangekv-target
export RANGEKV_BIN="${RANGEKV_BIN:-$main_target/debug/rangekv}"
if [ ! -x "$RANGEKV_BIN" ]; then
  echo "no rangekv binary at $RANGEKV_BIN: build it first (cargo build -p rangekv) or set RANGEKV_BIN" >&2
  exit 1
fi
source scripts/env.sh
export CARGO_TARGET_DIR=/var/tmp/rangekv-compat-target
# tikv-client pins an old toolchain in its rust-toolchain.toml; always use the stable one.
export RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-stable}"

cd compat/tikv-client
echo "rangekv binary: $RANGEKV_BIN"
start=$SECONDS
cargo test --locked --no-run
echo "<== compat build took $((SECONDS - start))s"
start=$SECONDS
cargo test --locked -- --nocapture
echo "<== compat test took $((SECONDS - start))s"
