#!/usr/bin/env bash
# Installs what is missing, builds txmq in Debug (AddressSanitizer and
# UndefinedBehaviorSanitizer), and runs every test with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build/debug -DCMAKE_BUILD_TYPE=Debug
cmake --build build/debug -j "$(nproc)"
# Leaks in a test or a broker it started fail the run; ASan's reports go to the test log.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
ctest --test-dir build/debug --output-on-failure -j 2 "$@"
