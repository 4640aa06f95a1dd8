#!/usr/bin/env bash
# The memory an idle agent link costs the server: for each server binary given, a fresh server on an
# empty SQLite directory, LINKS tokens minted (one pinned to each node), the server's RSS, then
# LINKS idle agent WebSockets opened and held, and its RSS again.
#   bench/links.sh 10000 /tmp/hyprbox-before /tmp/hyprbox-after
set -euo pipefail
LINKS=$1; shift
HOLDER=${HOLDER:-$HOME/.cache/hyprbox-release/release/examples/agent_links}
ulimit -n "$(ulimit -Hn)"
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
for bin in "$@"; do
  dir=$(mktemp -d)
  SECRET_KEY=bench HYPRBOX_DATA_DIR="$dir" DATABASE_URL="sqlite://$dir/hb.db" PORT=4100 \
    HYPRBOX_RATE_LIMIT=100000000 HYPRBOX_MAX_CONNECTIONS=100000 RUST_LOG=warn "$bin" serve >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:4100/health >/dev/null && break; sleep 0.2; done
  jwt=$(curl -sf -H 'Content-Type: application/json' -d '{"email":"b@e.x","password":"benchmark1"}' \
    http://127.0.0.1:4100/api/auth/register | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')
  "$HOLDER" http://127.0.0.1:4100 "$jwt" "$LINKS" 8 20 >"$dir/holder" 2>&1 &
  holder=$!
  for _ in $(seq 600); do grep -q minted "$dir/holder" && break; sleep 0.5; done
  sleep 4
  before=$(rss_mib "$pid")
  for _ in $(seq 600); do grep -q holding "$dir/holder" && break; sleep 0.5; done
  grep -q holding "$dir/holder" || { echo "$(basename "$bin"): links did not open: $(cat "$dir/holder")"; }
  sleep 5
  after=$(rss_mib "$pid")
  per_link=$(python3 -c "print(round(($after - $before) * 1024 / $LINKS, 1))")
  echo "$(basename "$bin") links=$LINKS: RSS ${before} MiB with the tokens minted, ${after} MiB holding the links: ${per_link} KiB a link"
  kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
done
