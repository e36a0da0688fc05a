#!/usr/bin/env bash
# Starts a local cluster (1 PD + 3 stores, each its own process) with a short demo workload and
# keeps it running until Ctrl-C. Extra arguments go to `rangekv playground` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

timed "build" cargo build -p rangekv
exec "$CARGO_TARGET_DIR/debug/rangekv" playground --demo "$@"
