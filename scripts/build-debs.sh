#!/usr/bin/env bash
# Builds the Debian packages txmq and libtxmq-dev into build/debs/ (README, "Installing").
# A Release build of only the packaged targets, in build/pkg: no sanitizers, no tests, no
# examples; through ccache when there is one. Needs what scripts/install-deps.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/pkg
out=$PWD/build/debs

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
# CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: cpack's install step would otherwise build every
# target first (the benchmark too); the packaged ones are built just before it.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DTXMQ_SANITIZE=OFF -DTXMQ_BUILD_TESTS=OFF -DTXMQ_BUILD_EXAMPLES=OFF \
  -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON "${launcher[@]}"
cmake --build "$build" -j "$(nproc)" --target txmq-broker txmq txmq-notifier txmq_client

rm -rf "$out"
cpack --config "$build/CPackConfig.cmake" -B "$out"
rm -rf "$out/_CPack_Packages"
ls -l "$out"/*.deb
