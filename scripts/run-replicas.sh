#!/usr/bin/env bash
# A leader and two followers on loopback, for trying replication by hand (README
# "Replication"): b1 leads on 127.0.0.1:7411, b2 and b3 follow on 127.0.0.1:7421 and
# 127.0.0.1:7431 (metrics on the port after each), sync mode, min_insync = 2.
#
#   scripts/run-replicas.sh [DIR]        # configs, data and logs in DIR (/tmp/txmq-replicas)
#   scripts/run-replicas.sh stop [DIR]   # stops the three (SIGTERM), keeps DIR
#
# Builds nothing: the binaries come from TXMQ_BIN_DIR (default build/release, as
# scripts/run-broker.sh builds it). Starting again on the same DIR keeps each store and
# writes the configs again with b1 as leader: after promoting another, edit its config's
# role instead (see the README).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${TXMQ_BIN_DIR:-$root/build/release}
broker=$bin_dir/broker/txmq-broker
cli=$bin_dir/cli/txmq
ids=(b1 b2 b3)
ports=(7411 7421 7431)

# shellcheck source=lib/local-processes.sh
source "$root/scripts/lib/local-processes.sh"

stop() {  # DIR
  local dir=$1 id
  for id in "${ids[@]}"; do stop_started "$id" "$dir/$id.pid" txmq-broker; done
}

if [[ ${1:-} == stop ]]; then
  stop "${2:-/tmp/txmq-replicas}"
  exit 0
fi
dir=${1:-/tmp/txmq-replicas}
[[ -x $broker ]] || { echo "no $broker: build first (scripts/run-broker.sh, or set TXMQ_BIN_DIR)" >&2; exit 2; }
mkdir -p "$dir"
for id in "${ids[@]}"; do
  if running_started "$dir/$id.pid" txmq-broker; then
    echo "$id is already running (pid $(<"$dir/$id.pid")): scripts/run-replicas.sh stop $dir" >&2
    exit 1
  fi
done

peers=""
for i in 0 1 2; do peers+="${ids[i]} = \"127.0.0.1:${ports[i]}\""$'\n'; done
for i in 0 1 2; do
  id=${ids[i]}
  role=follower
  ((i == 0)) && role=leader
  cat >"$dir/$id.toml" <<TOML
[broker]
listen = "127.0.0.1:${ports[i]}"
metrics_listen = "127.0.0.1:$((ports[i] + 1))"
data_dir = "$dir/$id-data"

[replication]
id = "$id"
role = "$role"
mode = "sync"
min_insync = 2

[replication.peers]
$peers
TOML
done

# Each broker prints "listening on HOST:PORT" once it serves; wait for that line (in its
# stdout file), or for its exit, for at most 30 s each.
for i in 0 1 2; do
  id=${ids[i]}
  : >"$dir/$id.out"
  "$broker" --config "$dir/$id.toml" >"$dir/$id.out" 2>"$dir/$id.log" &
  echo $! >"$dir/$id.pid"
done
for i in 0 1 2; do
  id=${ids[i]}
  pid=$(<"$dir/$id.pid")
  if ! wait_for_line "$id" "$dir/$id.out" '^listening on ' "$pid" "$dir/$id.log"; then
    stop "$dir"
    exit 1
  fi
  echo "$id ($(sed -n 's/^listening on //p' "$dir/$id.out")), pid $pid, log $dir/$id.log"
done

cat <<EOF

Three brokers run in the background: b1 leads, b2 and b3 follow (sync, min_insync = 2).
  export PATH=$bin_dir/cli:\$PATH
  all=127.0.0.1:7411,127.0.0.1:7421,127.0.0.1:7431   # clients find the leader among them
  txmq --broker \$all cluster status        # role, epoch, in-sync set, each follower's lag
  txmq --broker \$all topic create orders && seq 1 5 | txmq --broker \$all produce orders
  kill -9 \$(cat $dir/b1.pid)                # the leader's machine dies...
  txmq --broker 127.0.0.1:7421 cluster promote   # ...an operator promotes b2
  txmq --broker 127.0.0.1:7431 cluster digest    # per key space, what b3's store holds
Stop them with: scripts/run-replicas.sh stop $dir
EOF
[[ -x $cli ]] || echo "(no $cli yet: build the txmq tool too)"
