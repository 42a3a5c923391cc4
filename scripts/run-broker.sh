#!/usr/bin/env bash
# Installs what is missing, builds txmq (Release), and starts the broker on its defaults:
# protocol on 127.0.0.1:7411, metrics on 127.0.0.1:7412, data in ./txmq-data.
# Extra arguments go to txmq-broker (e.g. --listen 127.0.0.1:0).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DTXMQ_BUILD_TESTS=OFF
cmake --build build/release -j "$(nproc)"
exec build/release/broker/txmq-broker --config config/txmq-broker.toml "$@"
