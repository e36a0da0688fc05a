#!/usr/bin/env bash
# Runs the whole test suite (the README's test command; CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

total=$SECONDS
timed "format check" cargo fmt --all -- --check
timed "build (tests, benches, binaries)" cargo test --workspace --all-targets --no-run
timed "clippy" cargo clippy --workspace --all-targets -- -D warnings
timed "tests" cargo test --workspace --all-targets
echo "all steps took $((SECONDS - total))s"
