#!/usr/bin/env bash
# Builds the container image rangekv:latest without any registry: FROM scratch, holding the
# rangekv binary, exactly the shared libraries it links (found with ldd), and a passwd entry
# for the unprivileged user it runs as. The entrypoint is the binary itself, so
# `docker run rangekv pd ...`, `... server ...`, `... ctl ...` work as the commands do.
#
#   scripts/image.sh                 # release build (cargo build --release), then the image
#   scripts/image.sh --binary PATH   # an existing binary instead (e.g. a debug build in tests)
#   scripts/image.sh --tag NAME      # another tag than rangekv:latest
#
# Prints the image's size at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=rangekv:latest
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  source scripts/env.sh
  cargo build --release -p rangekv
  binary="$CARGO_TARGET_DIR/release/rangekv"
fi
[ -x "$binary" ] || { echo "no executable at $binary" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/root/bin" "$ctx/root/etc" "$ctx/root/data" "$ctx/root/certs" "$ctx/root/tmp"
cp "$binary" "$ctx/root/bin/rangekv"
# Every library the binary needs, at the path the loader looks for it.
ldd "$binary" | awk '/=>/ { print $3 } /^[ \t]*\// { print $1 }' | while read -r lib; do
  [ -f "$lib" ] || continue
  mkdir -p "$ctx/root$(dirname "$lib")"
  cp -L "$lib" "$ctx/root$lib"
done
echo "rangekv:x:10001:10001:rangekv:/data:/bin/rangekv" > "$ctx/root/etc/passwd"
echo "rangekv:x:10001:" > "$ctx/root/etc/group"
cat > "$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY root/ /
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["/bin/rangekv"]
EOF
# /data must belong to the user: built as root-owned files, so hand it over numerically.
chmod 0777 "$ctx/root/data" "$ctx/root/certs" "$ctx/root/tmp"
docker build --quiet --tag "$tag" "$ctx" >/dev/null
echo "built $tag: $(docker image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.1f MiB", $1 / 1048576 }')"
