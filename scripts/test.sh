#!/usr/bin/env bash
# Runs the whole test suite (the README's test command; CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

total=$SECONDS
timed "format check" cargo fmt --all -- --check
timed "build (tests, benches, binaries)" cargo test --workspace --all-targets --no-run
timed "clippy" cargo clippy --workspace --all-targets -- -D warnings
# `rangekv bench --target etcd` is tested against a real 3-member etcd.
timed "etcd (for the bench's etcd target)" bash scripts/etcd-cluster.sh install
timed "tests" cargo test --workspace --all-targets
# Wire compatibility: the published TiKV Rust client against a local cluster of our binaries.
timed "tikv-client compatibility" bash scripts/compat.sh
echo "all steps took $((SECONDS - total))s"
