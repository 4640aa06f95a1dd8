#!/usr/bin/env bash
# The cost of open live streams to the heartbeat flood: for each server binary given, a fresh
# server on an empty SQLite directory, STREAMS streams held open (reading, or stalled), and wrk
# flooding heartbeats from a 10,000-node fleet for DUR seconds.
#   bench/streams.sh "0 100 500 1000" read /tmp/hyprbox-before /tmp/hyprbox-after
# ENCODING=gzip makes every stream ask for gzip, as a browser's does.
set -euo pipefail
COUNTS=$1; MODE=$2; shift 2
DUR=${DUR:-15}
HOLDERS=${HOLDERS:-$HOME/.cache/hyprbox-release/release/examples/stream_holders}
ulimit -n "$(ulimit -Hn)"
for count in $COUNTS; do
  for bin in "$@"; do
    dir=$(mktemp -d)
    SECRET_KEY=bench HYPRBOX_DATA_DIR="$dir" DATABASE_URL="sqlite://$dir/hb.db" PORT=4100 \
      HYPRBOX_RATE_LIMIT=100000000 HYPRBOX_NODE_CREATE_LIMIT=100000000 HYPRBOX_MAX_STREAMS_PER_USER=100000 \
      RUST_LOG=warn "$bin" serve >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do curl -sf http://127.0.0.1:4100/health >/dev/null && break; sleep 0.2; done
    jwt=$(curl -sf -H 'Content-Type: application/json' -d '{"email":"b@e.x","password":"benchmark1"}' \
      http://127.0.0.1:4100/api/auth/register | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
    token=$(curl -sf -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' -d '{"name":"bench"}' \
      http://127.0.0.1:4100/api/tokens | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
    holders=""
    if [ "$count" -gt 0 ]; then
      "$HOLDERS" 127.0.0.1:4100 "$jwt" "$count" "$MODE" "$((DUR + 3))" ${ENCODING:-} >"$dir/holders" &
      holders=$!
      sleep 3
    fi
    rate=$(TOKEN=$token NODES=10000 wrk -t2 -c64 -d"${DUR}s" --latency -s bench/heartbeat.lua \
      http://127.0.0.1:4100/api/nodes/heartbeat | awk '/Requests\/sec/ {print $2} / 99%/ {p99=$2} END {print "p99", p99}' | tr '\n' ' ')
    [ -n "$holders" ] && { wait "$holders" || true; }
    echo "$(basename "$bin") streams=$count $MODE: $rate $(cat "$dir/holders" 2>/dev/null || true)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
