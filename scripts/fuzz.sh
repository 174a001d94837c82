#!/usr/bin/env bash
# Fuzzes every parser of outside input (where clauses, shape request parameters, write protocol
# bodies, the replication stream) with cargo-fuzz (libFuzzer, coverage-guided) for a time budget.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]      (default: 300 s, every target)
#
# Installs cargo-fuzz if missing. Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it
# accept the -Z flags cargo-fuzz passes. The corpus grows in fuzz/corpus/<target> (seeded from
# fuzz/seeds/<target>), crashes land in fuzz/artifacts/<target>/; neither is committed.
# Limits per input: -timeout (super-linear work), -rss_limit_mb, and -malloc_limit_mb (single
# allocations; enforced with FUZZ_SANITIZER=address only, as libFuzzer needs a sanitizer's malloc
# hooks for it). Environment: FUZZ_SANITIZER=none|address (default none: twice the executions per
# second and a shorter build; the code under test is safe Rust apart from libpg_query's FFI),
# FUZZ_TIMEOUT (seconds per input, default 5), FUZZ_JOBS (build jobs, default 2),
# FUZZ_SEED (libFuzzer's -seed: a fixed one makes a run repeatable, as CI wants; default random),
# FUZZ_KEEP_GOING=1 (libFuzzer's fork mode: record every crash, timeout and OOM and carry on
# instead of stopping at the first; for long exploratory runs).
#
# Prints per target: executions, exec/s, coverage (edges) and features, corpus size, peak RSS.
# Exits non-zero when any target crashed, timed out or ran out of memory, naming the reproducer;
# replay one with `cargo fuzz run <target> <file>` and shrink it with `cargo fuzz tmin`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

ALL_TARGETS=(where_clause where_structured shape_params write_request pgoutput)
CARGO_FUZZ_VERSION=0.13.2

secs=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
sanitizer=${FUZZ_SANITIZER:-none}
timeout=${FUZZ_TIMEOUT:-5}
export RUSTC_BOOTSTRAP=1
# ASan's fake stacks (use-after-return detection) put locals on the heap, which breaks
# libpg_query's stack depth check: every moderately nested clause would fail to parse.
[ "$sanitizer" != address ] || export ASAN_OPTIONS="detect_stack_use_after_return=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export CARGO_BUILD_JOBS=${FUZZ_JOBS:-2}
# The main workspace's target dir must not be used: instrumented builds would evict its cache.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

start=$(date +%s)
build_args=()
[ ${#targets[@]} -ne 1 ] || build_args=("${targets[0]}")
cargo fuzz build -s "$sanitizer" "${build_args[@]}"
echo "fuzz build: $(( $(date +%s) - start )) s (sanitizer $sanitizer)"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/fuzz.log"
  dict=()
  [ ! -f "dict/$t.dict" ] || dict=(-dict="dict/$t.dict")
  seed=()
  [ -z "${FUZZ_SEED:-}" ] || seed=(-seed="$FUZZ_SEED")
  fork=()
  [ "${FUZZ_KEEP_GOING:-0}" != 1 ] || fork=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  before=$(ls "artifacts/$t")
  status=0
  cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout="$timeout" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -max_len=4096 -print_final_stats=1 "${dict[@]}" "${seed[@]}" "${fork[@]}" >"$log" 2>&1 || status=$?
  found=$(comm -13 <(echo "$before") <(ls "artifacts/$t") | grep -E '^(crash|timeout|oom|leak|slow-unit)-' || true)
  [ -z "$found" ] || status=1
  # The last status line: "#N  DONE|pulse|NEW  cov: C ft: F corp: K/Sb ... exec/s: E rss: R"
  # (fork mode: "#N: cov: C ft: F corp: K exec/s: E oom/timeout/crash: ...").
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -n 1)
  [ -n "$execs" ] || execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log" | tail -n 1)
  elapsed=$(sed -nE 's/.* time: ([0-9]+)s.*/\1/p' <<<"$last")
  [ -n "$rate" ] || [ -z "$elapsed" ] || [ -z "$execs" ] || rate=$(( execs / (elapsed > 0 ? elapsed : 1) ))
  cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.*corp: ([0-9]+(\/[0-9]+[a-zA-Z]*)?).*/\1/p' <<<"$last")
  rss=$(sed -nE 's/^stat::peak_rss_mb: *([0-9]+)/\1Mb/p' "$log" | tail -n 1)
  printf '%-17s %4ss  execs %-10s exec/s %-7s cov %-6s ft %-7s corpus %-12s rss %s\n' \
    "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}"
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    for a in $found; do
      echo "    reproducer: fuzz/artifacts/$t/$a"
      # Crashes replay in a moment: show the panic (fork mode keeps it out of the main log).
      case $a in
        crash-*)
          timeout 60 "target/x86_64-unknown-linux-gnu/release/$t" "artifacts/$t/$a" 2>&1 \
            | grep -A1 -m1 'panicked at' | sed 's/^/      /' || true ;;
        *) grep -m1 -E 'ERROR: libFuzzer: (timeout|out-of-memory|malloc)' "$log" | sed 's/^/      /' || true ;;
      esac
    done
    echo "    log: fuzz/$log"
    echo "    replay: cd fuzz && ${ASAN_OPTIONS:+ASAN_OPTIONS=$ASAN_OPTIONS }RUSTC_BOOTSTRAP=1" \
      "cargo fuzz run -s $sanitizer $t artifacts/$t/<file>"
  fi
done

# A target passes when it ran its whole budget without a crash, timeout or OOM.
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
