#!/usr/bin/env bash
# Runs every check and test: formatting and clippy (warnings are errors), then Rust unit and
# integration tests (real Postgres clusters started by the tests), the official Electric client
# compatibility suite (Node), and the pipeline editor in headless Chromium against a real
# `ferrite dev` (web/), all via cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || [ -n "${FERRITE_PG_BIN:-}" ] || missing+=("postgresql (server binaries)")
ls /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 || missing+=("libclang-dev (for the Postgres parser crate)")
command -v node >/dev/null 2>&1 || missing+=("nodejs")
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=("chromium (the editor's browser tests)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} — on Debian: apt-get install -y postgresql libclang-dev nodejs npm chromium" >&2
  exit 1
fi
if [ ! -d web/electric-compat/node_modules/@electric-sql/client ]; then
  (cd web/electric-compat && npm ci --no-audit --no-fund)
fi
if [ ! -d web/node_modules/playwright-core ]; then
  (cd web && npm ci --no-audit --no-fund)
fi
# Style and lints first: they fail in seconds where the tests take minutes.
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
