# Shared set-up of the build environment, sourced by the other scripts.
# Installs what a fresh Debian/Ubuntu machine lacks and points cargo at a build cache that
# outlives any one clone (a clean build of RocksDB takes ~20 minutes on 2 cores).

set -euo pipefail

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/rangekv-target}"
export SCCACHE_DIR="${SCCACHE_DIR:-/var/tmp/rangekv-sccache}"
export SCCACHE_CACHE_SIZE="${SCCACHE_CACHE_SIZE:-20G}"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "$@"
}
# Required: RocksDB's bindings need libclang, RocksDB itself a C++ compiler.
need_pkgs=()
# (libclang-dev provides the unversioned libclang.so bindgen loads; libclang1 alone does not.)
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || need_pkgs+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_pkgs+=(g++)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  apt_install "${need_pkgs[@]}"
fi
# Optional: sccache caches RocksDB's C++ objects across dependency changes that would otherwise
# rebuild it. Without it the build still works, only slower after such a change.
if ! command -v sccache >/dev/null 2>&1; then
  echo "installing sccache (optional)"
  apt_install sccache || echo "sccache not available; building without it"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
# The server stays up for the whole run (by default it exits after 10 idle minutes, and the test
# step is longer; restarting it means scanning a large cache, which can outlast the client's
# start-up wait and fail the compile). It is started here, given time, and left out if it does
# not come up: a slower build beats a failed one.
sccache_up() {
  local i
  for i in $(seq 1 30); do
    sccache --show-stats >/dev/null 2>&1 && return 0
    [ "$i" -eq 1 ] && { sccache --start-server >/dev/null 2>&1 || true; }
    sleep 2
  done
  return 1
}
# Sourcing again (each script does) checks again: a server started earlier by another run may
# have exited since.
if command -v sccache >/dev/null 2>&1 &&
  { [ -z "${RUSTC_WRAPPER:-}" ] || [ "$RUSTC_WRAPPER" = "$(command -v sccache)" ]; }; then
  export SCCACHE_IDLE_TIMEOUT=0
  if sccache_up; then
    export RUSTC_WRAPPER="$(command -v sccache)"
  else
    echo "sccache server did not start; building without it"
    unset RUSTC_WRAPPER
  fi
fi

# Prints how long a step took.
timed() {
  local name=$1
  shift
  local start=$SECONDS
  echo "==> $name"
  "$@"
  echo "<== $name took $((SECONDS - start))s"
}
