#!/usr/bin/env bash
# HyprBox against its ceiling, back to back on one machine: a bare axum server doing only what the
# protocol costs (examples/ceiling.rs), then each HyprBox binary given, round after round, each
# target on a fresh process (HyprBox on a fresh SQLite database, so every flood starts on an empty
# history table). Three loads per target: GET /health, GET /api/auth/me with the session cookie,
# and the heartbeat flood of bench/heartbeat.lua (10,000 nodes, one fleet-wide token).
#
#   cargo build --release -p hyprbox --example ceiling
#   bench/ceiling.sh "$CARGO_TARGET_DIR/release/hyprbox" [another/hyprbox ...]
#
# Settings: RUNS (rounds, default 3), DUR (seconds per GET run, 15), FLOOD_DUR (seconds of the
# heartbeat flood, 20), CEILING_BIN. Each binary is labelled by its directory's name (copy
# builds of two commits to dirs named after them to compare). Prints every run, then one markdown table: the median of each
# target, the ceiling's median and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
ceiling="${CEILING_BIN:-$target_dir/release/examples/ceiling}"
runs="${RUNS:-3}" dur="${DUR:-15}" flood_dur="${FLOOD_DUR:-20}"
port=4199
[ $# -ge 1 ] || { echo "usage: $0 path/to/hyprbox [more/hyprbox ...]" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 2; }
[ -x "$ceiling" ] || { echo "build the ceiling first: cargo build --release -p hyprbox --example ceiling" >&2; exit 2; }
results=$(mktemp)
url="http://127.0.0.1:$port"

wait_up() { for _ in $(seq 200); do curl -fs "$url/health" >/dev/null && return 0; sleep 0.05; done; return 1; }

# wrk's "Requests/sec" and its 99th percentile in ms, as "rate p99".
measure() {
  local out rate p99
  out=$(wrk -t2 -c64 -d"$1" --latency "${@:2}")
  rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
  echo "$rate $p99"
}

record() { echo "$1|$2|$3" >>"$results"; printf '%-22s %-12s %s\n' "$1" "$2" "$3" >&2; }

for round in $(seq "$runs"); do
  echo "round $round of $runs" >&2
  # The ceiling.
  "$ceiling" "127.0.0.1:$port" 2>/dev/null & pid=$!
  wait_up
  record ceiling health "$(measure "${dur}s" "$url/health")"
  record ceiling me "$(measure "${dur}s" "$url/api/auth/me")"
  record ceiling heartbeat "$(TOKEN=x NODES=10000 measure "${flood_dur}s" -s bench/heartbeat.lua "$url/api/nodes/heartbeat")"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # Each HyprBox binary, on a fresh database.
  for bin in "$@"; do
    name=$(basename "$(dirname "$bin")")
    work=$(mktemp -d)
    (cd "$work" && HYPRBOX_BIND=127.0.0.1:$port HYPRBOX_RATE_LIMIT=100000000 HYPRBOX_NODE_CREATE_LIMIT=100000000 RUST_LOG=warn exec "$bin" serve >server.log 2>&1) & pid=$!
    wait_up
    jwt=$(curl -fs -X POST "$url/api/auth/register" -H 'Content-Type: application/json' \
      -d '{"email":"bench@example.com","password":"bench password 1"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    token=$(curl -fs -X POST "$url/api/tokens" -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' \
      -d '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    record "$name" health "$(measure "${dur}s" "$url/health")"
    record "$name" me "$(measure "${dur}s" -H "Cookie: hb_token=$jwt" "$url/api/auth/me")"
    record "$name" heartbeat "$(TOKEN=$token NODES=10000 measure "${flood_dur}s" -s bench/heartbeat.lua "$url/api/nodes/heartbeat")"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$work"
  done
done

labels=(); for bin in "$@"; do labels+=("$(basename "$(dirname "$bin")")"); done
python3 - "$results" "${labels[@]}" <<'PY'
import statistics, sys
rows = [line.strip().split("|") for line in open(sys.argv[1]) if line.strip()]
runs = {}
for target, load, value in rows:
    rate, p99 = value.split()
    runs.setdefault((target, load), []).append((float(rate), float(p99)))
names = {"health": "GET /health", "me": "GET /api/auth/me (cookie)", "heartbeat": "POST /api/nodes/heartbeat flood"}
print("| load | target | req/s (each run) | median | p99 ms (median) | ceiling median | ratio |")
print("|---|---|---|---|---|---|---|")
for load in ["health", "me", "heartbeat"]:
    ceiling = statistics.median(r for r, _ in runs[("ceiling", load)])
    for target in ["ceiling"] + sys.argv[2:]:
        values = runs[(target, load)]
        median = statistics.median(r for r, _ in values)
        p99 = statistics.median(p for _, p in values)
        each = ", ".join(f"{r:,.0f}" for r, _ in values)
        ratio = "" if target == "ceiling" else f"{median / ceiling:.2f}"
        print(f"| {names[load]} | {target} | {each} | {median:,.0f} | {p99:.1f} | {ceiling:,.0f} | {ratio} |")
PY
rm -f "$results"
