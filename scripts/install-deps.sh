#!/usr/bin/env bash
# Installs the Debian 12 packages txmq needs to build, run and test. Idempotent:
# apt-get skips what is already installed. Must run as root.
# --fuzz adds what scripts/fuzz.sh needs: clang and, in libclang-rt-14-dev, the libFuzzer,
# ASan and UBSan runtimes of Debian's clang 14.
# openssl (the command): tls_cli_test and the secure example make their certificates with it.
# curl (the command): metrics_tls_test checks the HTTPS metrics endpoint with it.
# dpkg-dev and file: CPack's Debian generator (scripts/build-debs.sh) runs dpkg-shlibdeps
# on the files `file` says are ELF.
# nlohmann-json3-dev: the broker's etcd client reads etcd's JSON gateway with it.
# etcd-server: the cluster's coordinator; the etcd tests start their own on ports of their
# own, so a Debian etcd service its install may start on 2379 is neither used nor in the way.
# iproute2 (the ip command): chaos_test, run as root, builds network namespaces with it to
# cut links.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libuv1-dev liblmdb-dev lmdb-utils
  libflatbuffers-dev flatbuffers-compiler
  doctest-dev libtoml11-dev libcli11-dev libspdlog-dev
  libcurl4-openssl-dev libssl-dev openssl libsqlite3-dev libcpp-httplib-dev nlohmann-json3-dev
  etcd-server iproute2
  prometheus python3 wrk curl
  dpkg-dev file
)
if [ "${1:-}" = "--fuzz" ]; then
  packages+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends keeps the prometheus package from pulling a web UI stack;
# we only need its binaries (promtool and prometheus) for the tests.
apt-get install -y -qq --no-install-recommends "${missing[@]}"
