#!/usr/bin/env bash
# Proves vendor/sqlx-core is the published sqlx-core 0.9.0 with exactly vendor/sqlx-core.patch
# applied, and that it carries sqlx's real licence texts (the published crate's LICENSE files are
# 14- and 17-byte leftovers of upstream symlinks; sqlx 0.9.0's own crate has the texts).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Fetch both published crates through cargo itself (the registry and its checksums), in a scratch
# project that does not apply our patch.
mkdir -p "$work/fetch/src"
cat >"$work/fetch/Cargo.toml" <<'TOML'
[package]
name = "fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
sqlx-core = "=0.9.0"
sqlx = { version = "=0.9.0", default-features = false }
TOML
: >"$work/fetch/src/lib.rs"
(cd "$work/fetch" && cargo fetch --quiet)
registry=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/ | head -1)
tar -xzf "$registry/sqlx-core-0.9.0.crate" -C "$work"
tar -xzf "$registry/sqlx-0.9.0.crate" -C "$work"

upstream="$work/sqlx-core-0.9.0"
(cd "$upstream" && patch -p1 --quiet <"$OLDPWD/sqlx-core.patch")
cp "$work/sqlx-0.9.0/LICENSE-APACHE" "$work/sqlx-0.9.0/LICENSE-MIT" "$upstream/"
if ! diff -r --exclude=.cargo-ok --exclude=Cargo.lock "$upstream" sqlx-core; then
  echo "vendor/sqlx-core is not sqlx-core 0.9.0 + vendor/sqlx-core.patch + sqlx's licence texts" >&2
  exit 1
fi
echo "vendor/sqlx-core is sqlx-core 0.9.0 with vendor/sqlx-core.patch applied and sqlx's licence texts"
