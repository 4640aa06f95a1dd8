#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each. Not part of .ci/run: fuzzing has no end.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets it
# pass the sanitizer flags. A crash is saved under fuzz/artifacts/<target>/: turn it into a
# regression test beside the code it broke, then fix.
#   fuzz/run.sh 60
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/hyprbox-fuzz}
for target in preset shell_quote heartbeat findings merge_patch cron csv; do
  echo "==> $target for ${SECONDS_EACH}s"
  cargo fuzz run "$target" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048
done
