#!/usr/bin/env bash
# Heartbeat cost as the fleet grows: for each (agents, interval), a fresh server on SQLite (or on
# DATABASE_URL when set), `hyprbox simulate` for DURATION seconds, and the server's CPU time per
# heartbeat read from /proc. Usage: bench/scaling.sh [path/to/hyprbox]
set -euo pipefail
bin="${1:-${CARGO_TARGET_DIR:-target}/release/hyprbox}"
duration="${DURATION:-30}"
port=4100
printf '| agents | interval | heartbeats/s | p50 ms | p99 ms | max ms | errors | server CPU µs/heartbeat | server RSS MiB |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for run in "1000 1" "10000 1" "50000 5"; do
  set -- $run
  agents=$1 interval=$2
  work=$(mktemp -d)
  (cd "$work" && HYPRBOX_BIND=127.0.0.1:$port HYPRBOX_RATE_LIMIT=100000000 HYPRBOX_NODE_CREATE_LIMIT=100000000 RUST_LOG=warn "$bin" serve > server.log 2>&1) &
  for _ in $(seq 100); do curl -fs http://127.0.0.1:$port/health >/dev/null && break; sleep 0.1; done
  pid=$(pgrep -f "$bin serve" | head -1)
  curl -fs -X POST http://127.0.0.1:$port/api/auth/register -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","password":"bench password 1"}' >/dev/null
  ticks() { awk '{print $14 + $15}' /proc/$pid/stat; }
  before=$(ticks)
  summary=$(HYPRBOX_EMAIL=bench@example.com HYPRBOX_PASSWORD='bench password 1' \
    "$bin" simulate --server http://127.0.0.1:$port --agents "$agents" --interval "$interval" --duration "$duration" --json)
  after=$(ticks)
  rss=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status)
  python3 - "$summary" "$before" "$after" "$agents" "$interval" "$rss" <<'PY'
import json, os, sys
s = json.loads(sys.argv[1]); before, after = int(sys.argv[2]), int(sys.argv[3])
hz = os.sysconf("SC_CLK_TCK")
cpu_us = (after - before) / hz * 1e6 / max(s["accepted"], 1)
l = s["latencyMs"]
print(f'| {sys.argv[4]} | {sys.argv[5]} s | {s["ratePerSec"]:.0f} | {l["p50"]:.2f} | {l["p99"]:.2f} | {l["max"]:.1f} | {s["errors"]} | {cpu_us:.0f} | {sys.argv[6]} |')
PY
  kill -TERM "$pid"; wait 2>/dev/null || true
  rm -rf "$work"
done
