#!/usr/bin/env bash
# Runs every check and test: formatting and clippy (warnings are errors), then Rust unit and
# integration tests (real Postgres clusters started by the tests), the official Electric client
# compatibility suite (Node), and the pipeline editor in headless Chromium against a real
# `ferrite dev` (web/), all via cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs what is missing (system packages when root or with passwordless sudo, else it says
# what to run; the npm packages of web/), so this works on a fresh machine.
scripts/setup.sh
# Style and lints first: they fail in seconds where the tests take minutes.
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
