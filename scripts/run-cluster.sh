#!/usr/bin/env bash
# A cluster with automatic failover in one command (README "Running a cluster"): installs
# what is missing, builds txmq (Release, as scripts/run-broker.sh does), and starts on
# loopback a one-member etcd (client URL http://127.0.0.1:7400) and three brokers that
# elect their leader through it: b1, b2 and b3 on 127.0.0.1:7411, :7421 and :7431
# (metrics on the port after each), sync mode, min_insync = 2, lease TTL 3 s.
#
#   scripts/run-cluster.sh [DIR]        # configs, data and logs in DIR (/tmp/txmq-cluster)
#   scripts/run-cluster.sh stop [DIR]   # stops the brokers, then etcd (SIGTERM); keeps DIR
#
# TXMQ_BIN_DIR=build/debug (say) uses binaries already built there instead of building.
# Starting again on the same DIR keeps every store and etcd's data: the brokers elect a
# leader among the in-sync set etcd remembers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ids=(b1 b2 b3)
ports=(7411 7421 7431)
etcd_client=127.0.0.1:7400
etcd_peer=127.0.0.1:7401

# shellcheck source=lib/local-processes.sh
source "$root/scripts/lib/local-processes.sh"

stop() {  # DIR
  local dir=$1 id
  for id in "${ids[@]}"; do stop_started "$id" "$dir/$id.pid" txmq-broker; done
  stop_started etcd "$dir/etcd.pid" etcd
}

if [[ ${1:-} == stop ]]; then
  stop "${2:-/tmp/txmq-cluster}"
  exit 0
fi
dir=${1:-/tmp/txmq-cluster}

if [[ -n ${TXMQ_BIN_DIR:-} ]]; then
  bin_dir=$TXMQ_BIN_DIR
else
  "$root/scripts/install-deps.sh"
  cmake -S "$root" -B "$root/build/release" -DCMAKE_BUILD_TYPE=Release -DTXMQ_BUILD_TESTS=OFF >/dev/null
  cmake --build "$root/build/release" -j "$(nproc)" --target txmq-broker txmq
  bin_dir=$root/build/release
fi
broker=$bin_dir/broker/txmq-broker
cli=$bin_dir/cli/txmq
[[ -x $broker ]] || { echo "no $broker: build first, or leave TXMQ_BIN_DIR unset" >&2; exit 2; }
command -v etcd >/dev/null || { echo "no etcd: scripts/install-deps.sh installs etcd-server" >&2; exit 2; }
mkdir -p "$dir"
for name in etcd "${ids[@]}"; do
  if running_started "$dir/$name.pid" etcd || running_started "$dir/$name.pid" txmq-broker; then
    echo "$name is already running (pid $(<"$dir/$name.pid")): scripts/run-cluster.sh stop $dir" >&2
    exit 1
  fi
done

if ! start_etcd txmq-etcd "$dir" "$etcd_client" "$etcd_peer"; then
  stop "$dir"
  exit 1
fi
echo "etcd (http://$etcd_client), pid $(<"$dir/etcd.pid"), log $dir/etcd.log"

peers=""
for i in 0 1 2; do peers+="${ids[i]} = \"127.0.0.1:${ports[i]}\""$'\n'; done
for i in 0 1 2; do
  id=${ids[i]}
  cat >"$dir/$id.toml" <<TOML
[broker]
listen = "127.0.0.1:${ports[i]}"
metrics_listen = "127.0.0.1:$((ports[i] + 1))"
data_dir = "$dir/$id-data"

[replication]
id = "$id"
mode = "sync"
min_insync = 2

[replication.peers]
$peers
[cluster]
etcd_endpoints = ["http://$etcd_client"]
name = "local"
lease_ttl_s = 3
TOML
done

# Each broker prints "listening on HOST:PORT" once it serves (a follower too: it answers
# NotLeader); wait for that line, or its exit, for at most 30 s each.
for id in "${ids[@]}"; do
  : >"$dir/$id.out"
  "$broker" --config "$dir/$id.toml" >"$dir/$id.out" 2>"$dir/$id.log" &
  echo $! >"$dir/$id.pid"
done
for id in "${ids[@]}"; do
  pid=$(<"$dir/$id.pid")
  if ! wait_for_line "$id" "$dir/$id.out" '^listening on ' "$pid" "$dir/$id.log"; then
    stop "$dir"
    exit 1
  fi
  echo "$id ($(sed -n 's/^listening on //p' "$dir/$id.out" | head -1)), pid $pid, log $dir/$id.log"
done

all=127.0.0.1:7411,127.0.0.1:7421,127.0.0.1:7431
# The first election waits for all three to register, then the followers catch up and
# join etcd's in-sync set: give it up to 20 s, so that the status below shows them in.
for _ in $(seq 200); do
  "$cli" --broker "$all" cluster status 2>/dev/null | grep -q '^etcd_in_sync *b1,b2,b3' && break
  sleep 0.1
done
"$cli" --broker "$all" cluster status || true

cat <<EOF

etcd and three brokers run in the background; etcd chose the leader (above).
  export PATH=$bin_dir/cli:\$PATH
  all=$all   # clients find the leader among them
  txmq --broker \$all cluster status        # etcd's view, and this broker's replication
  txmq --broker \$all topic create orders && seq 1 5 | txmq --broker \$all produce orders
  kill -9 \$(cat $dir/b1.pid)                # if b1 leads: another takes over in seconds
  kill -STOP \$(cat $dir/b2.pid)             # a frozen follower leaves the in-sync set
Stop them with: scripts/run-cluster.sh stop $dir
EOF
