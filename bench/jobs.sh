#!/usr/bin/env bash
# The job path (pickup, job creation, claims, output) for each server given, ROUNDS times in turn,
# each run on a fresh server over an empty SQLite directory. A server is a binary, optionally
# followed by settings for it:
#   ROUNDS=3 bench/jobs.sh /tmp/hyprbox-before "/tmp/hyprbox-after HYPRBOX_SQLITE_WAL_AHEAD_MIB=0" /tmp/hyprbox-after
set -euo pipefail
ROUNDS=${ROUNDS:-3}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-$HOME/.cache/hyprbox-target}/release/examples/jobs_bench}
for round in $(seq "$ROUNDS"); do
  for server in "$@"; do
    read -ra words <<<"$server"
    bin=${words[0]}
    dir=$(mktemp -d)
    env "${words[@]:1}" SECRET_KEY=bench HYPRBOX_DATA_DIR="$dir" DATABASE_URL="sqlite://$dir/hb.db" \
      HYPRBOX_BIND=127.0.0.1:4100 HYPRBOX_RATE_LIMIT=100000000 HYPRBOX_JOB_OUTPUT_MAX_BYTES=4294967296 \
      RUST_LOG=warn "$bin" serve >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:4100/health >/dev/null && break; sleep 0.1; done
    curl -sf -X POST http://127.0.0.1:4100/api/auth/register -H 'Content-Type: application/json' \
      -d '{"email":"ops@example.com","password":"correcthorsebattery"}' >/dev/null
    echo "== round $round: $server"
    CLAIMS=${CLAIMS:-4000} OUTPUT_MIB=${OUTPUT_MIB:-512} "$BENCH" http://127.0.0.1:4100 ops@example.com correcthorsebattery "$pid" \
      | grep -E 'pickup|created|output' || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done
