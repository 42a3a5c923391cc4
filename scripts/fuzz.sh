#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) in build/fuzz, writes their seed
# corpus, replays the saved regressions, then fuzzes each target for SECONDS (default 60).
# Exits non-zero when any target crashed, hung or leaked; the input that did it is in
# build/fuzz/crashes/<target>/. The README's "Fuzzing" section says how to reproduce it.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: frame dispatch (default: both)
#
# The corpus a run finds is kept in build/fuzz/corpus/<target>/ and grows from run to run.
# TXMQ_FUZZ_ARGS adds libFuzzer flags to every run (e.g. "-max_len=8192").
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(frame dispatch)

scripts/install-deps.sh --fuzz
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
CC=clang CXX=clang++ cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=Debug -DTXMQ_FUZZ=ON \
  -DTXMQ_BUILD_TESTS=OFF -DTXMQ_BUILD_EXAMPLES=OFF "${launcher[@]}" >/dev/null
cmake --build build/fuzz -j "$(nproc)" --target txmq_fuzz

bin=build/fuzz/fuzz
# UB is fatal (the build has -fno-sanitize-recover); the stack trace says where.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
# The dispatcher's broker keeps its store in $TMPDIR: in memory when /dev/shm is there,
# so that its writes never wait for the disk (an fsync behind other processes' I/O can
# take seconds and look like a hang). A crash leaves the store for inspection.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  TMPDIR=$(mktemp -d /dev/shm/txmq-fuzz.XXXXXX)
else
  TMPDIR="$PWD/build/fuzz/tmp"
  rm -rf "$TMPDIR" && mkdir -p "$TMPDIR"
fi
export TMPDIR

failed=()
for t in "${targets[@]}"; do
  exe="$bin/txmq-fuzz-$t"
  [ -x "$exe" ] || { echo "fuzz: no target '$t' (frame, dispatch)"; exit 2; }
  corpus="build/fuzz/corpus/$t"
  crashes="build/fuzz/crashes/$t"
  mkdir -p "$corpus" "$crashes"

  # Inputs that once crashed must not crash again, except those of bugs still open
  # (fuzz/regressions/OPEN lists them).
  replay=()
  for f in fuzz/regressions/"$t"/*; do
    [ -f "$f" ] || continue
    grep -qxF "$t/$(basename "$f")" fuzz/regressions/OPEN 2>/dev/null && continue
    replay+=("$f")
  done
  if [ ${#replay[@]} -gt 0 ]; then
    echo "fuzz: $t: replaying ${#replay[@]} regression input(s)"
    "$exe" -runs=1 "${replay[@]}" >"$crashes/regressions.log" 2>&1 || {
      tail -n 40 "$crashes/regressions.log"
      failed+=("$t (regression)")
      continue
    }
  fi

  # The dispatch target's broker keeps state (and allocations) across inputs on purpose,
  # so libFuzzer's per-input leak check only stops the world for nothing there (it cut
  # the rate tenfold); LeakSanitizer still checks at exit, after the broker shut down.
  flags=()
  [ "$t" = dispatch ] && flags=(-detect_leaks=0)

  echo "fuzz: $t: ${seconds}s"
  log="$crashes/fuzz.log"
  # -timeout: one input taking this long is a hang, reported like a crash.
  set +e
  # shellcheck disable=SC2086
  "$exe" -max_total_time="$seconds" -timeout=60 -print_final_stats=1 -artifact_prefix="$crashes/" \
    "${flags[@]}" ${TXMQ_FUZZ_ARGS:-} "$corpus" "$bin/seeds/$t" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  echo "fuzz: $t: ${runs:-?} executions, ${rate:-?}/s, corpus $(ls "$corpus" | wc -l) inputs, exit $rc"
  if [ $rc -ne 0 ]; then
    grep -a -E "ERROR|runtime error|SUMMARY|Test unit written|harness:|inproc broker:" "$log" | head -n 20
    echo "fuzz: $t: full log in $log"
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (broker stores, if any, in $TMPDIR)"
  exit 1
fi
rm -rf "$TMPDIR"
echo "fuzz: no crash"
