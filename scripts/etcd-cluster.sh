#!/usr/bin/env bash
# A 3-member etcd cluster on loopback, for running `rangekv bench --target etcd` side by side
# with rangekv on the same machine.
#
#   scripts/etcd-cluster.sh start [DIR]   # members on 127.0.0.1:23790-23792 (clients) and
#                                         # :23800-23802 (peers), data and logs under DIR
#                                         # (default: a new temporary directory); prints the
#                                         # endpoints once the cluster answers
#   scripts/etcd-cluster.sh stop DIR      # stops the members started in DIR and removes DIR
#   scripts/etcd-cluster.sh install       # only install etcd (the test command does)
#
# Uses the `etcd` on PATH; installs Debian's etcd-server when there is none and apt-get can.
# etcd keeps its defaults (every write fsynced by a majority before it is acknowledged, as
# rangekv's), so the two are compared doing the same work.
set -euo pipefail

install_etcd() {
  command -v etcd >/dev/null && return 0
  if command -v apt-get >/dev/null; then
    echo "installing etcd-server" >&2
    local SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq etcd-server >/dev/null ||
      { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq etcd-server >/dev/null; }
    # Debian's package may start a single-member service on etcd's default ports (PD's too).
    $SUDO systemctl disable --now etcd >/dev/null 2>&1 || $SUDO service etcd stop >/dev/null 2>&1 || true
  fi
  command -v etcd >/dev/null || { echo "etcd is not installed" >&2; return 1; }
}

cmd=${1:-}
case "$cmd" in
  install)
    install_etcd
    ;;
  start)
    install_etcd
    dir=${2:-$(mktemp -d -t rangekv-etcd.XXXXXX)}
    mkdir -p "$dir"
    cluster=""
    for i in 0 1 2; do
      cluster+="${cluster:+,}m$i=http://127.0.0.1:$((23800 + i))"
    done
    for i in 0 1 2; do
      etcd --name "m$i" --data-dir "$dir/m$i" \
        --listen-client-urls "http://127.0.0.1:$((23790 + i))" \
        --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
        --listen-peer-urls "http://127.0.0.1:$((23800 + i))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + i))" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token rangekv-bench \
        >"$dir/m$i.log" 2>&1 &
      echo $! >"$dir/m$i.pid"
    done
    endpoints="127.0.0.1:23790,127.0.0.1:23791,127.0.0.1:23792"
    # Ready when every member reports itself healthy (its /health needs a leader).
    for _ in $(seq 1 100); do
      healthy=0
      for i in 0 1 2; do
        curl -fsS "http://127.0.0.1:$((23790 + i))/health" 2>/dev/null | grep -q '"true"' &&
          healthy=$((healthy + 1))
      done
      if [ "$healthy" = 3 ]; then
        echo "etcd: 3 members in $dir, endpoints $endpoints" >&2
        echo "$dir"
        exit 0
      fi
      sleep 0.2
    done
    echo "etcd did not become healthy; logs in $dir" >&2
    tail -n 5 "$dir"/m*.log >&2 || true
    exit 1
    ;;
  stop)
    dir=${2:?usage: $0 stop DIR}
    for pid in "$dir"/m*.pid; do
      [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    for pid in "$dir"/m*.pid; do
      [ -f "$pid" ] || continue
      while kill -0 "$(cat "$pid")" 2>/dev/null; do sleep 0.1; done
    done
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start [DIR] | stop DIR | install" >&2
    exit 2
    ;;
esac
