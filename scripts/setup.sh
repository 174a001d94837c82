#!/usr/bin/env bash
# Installs what building, running and testing Ferrite needs and is missing (Debian/Ubuntu):
#
#   scripts/setup.sh         everything the tests need (scripts/test.sh runs this first)
#   scripts/setup.sh --run   only what `cargo run --release -- dev` needs
#
# System packages: a C compiler and make (the where-clause parser is Postgres's own C code, built
# by the `pg_query` crate; the server's allocator, jemalloc, is built from C with make),
# libclang-dev (pg_query generates its Rust bindings with bindgen at build time, which loads
# libclang), the PostgreSQL server binaries (`ferrite dev` and the tests start
# their own clusters; the system's cluster is never touched), curl (the README's examples); for
# the tests also Node.js with npm (the Electric client suite, the web client), Chromium (the
# editor's browser tests), nginx and varnish (the tests of deploy/'s cache configurations) and
# nats-server (the cluster tests); the tests run their own processes of each. Missing ones are installed with apt-get when this runs
# as root or with passwordless sudo; otherwise it prints the command to run and exits non-zero. Then, for the
# tests, the npm packages of web/electric-compat and web/ (`npm ci`, when missing or older than
# their lock file).
set -euo pipefail
cd "$(dirname "$0")/.."

tests=1
case "${1:-}" in
  --run) tests=0 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--run]" >&2; exit 2 ;;
esac

have_postgres() {
  [ -n "${FERRITE_PG_BIN:-}" ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}
have_libclang() {
  # bindgen needs the library and clang's own headers (stdbool.h, …): both come with libclang-dev.
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ls /usr/lib/llvm-*/lib/clang/*/include/stdbool.h >/dev/null 2>&1
}

pkgs=()
{ command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1; } || pkgs+=(build-essential)
have_libclang || pkgs+=(libclang-dev)
have_postgres || pkgs+=(postgresql)
command -v curl >/dev/null 2>&1 || pkgs+=(curl)
if [ "$tests" = 1 ]; then
  command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
  command -v npm >/dev/null 2>&1 || pkgs+=(npm)
  [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || pkgs+=(chromium)
  [ -x /usr/sbin/nginx ] || pkgs+=(nginx)
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || pkgs+=(nats-server)
  [ -x /usr/sbin/varnishd ] || pkgs+=(varnish)
fi

if [ ${#pkgs[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${pkgs[*]} (Debian package names): install them with your system's package manager" >&2
    exit 1
  fi
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    echo "missing: ${pkgs[*]}. Install with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${pkgs[*]}" >&2
    exit 1
  fi
  echo "installing ${pkgs[*]} …"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if [ "$tests" = 1 ]; then
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$major" -lt 20 ]; then
    echo "warning: Node $(node --version 2>/dev/null || echo '(none)') found; the web tests are run with Node 20 or newer" >&2
  fi
  for d in web/electric-compat web; do
    if [ ! -f "$d/node_modules/.package-lock.json" ] || [ "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ]; then
      (cd "$d" && npm ci --no-audit --no-fund)
    fi
  done
fi
