#!/usr/bin/env bash
# CI, after scripts/test.sh (.ci/run): builds the Debian packages (scripts/build-debs.sh,
# a Release build of their targets) and runs tests/packaging/deb_package_test.py, which
# installs them on this machine, runs the broker as its unit says, then purges them.
# As root; apart from ctest because it changes the machine and compiles the project again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test-packages: skipped: installing packages needs root"
  exit 0
fi
scripts/install-deps.sh
scripts/build-debs.sh
rc=0
TXMQ_DEB_DIR="$PWD/build/debs" TXMQ_SOURCE_DIR="$PWD" python3 tests/packaging/deb_package_test.py || rc=$?
if [ "$rc" = 77 ]; then
  echo "test-packages: skipped (reason above)"
  exit 0
fi
exit "$rc"
