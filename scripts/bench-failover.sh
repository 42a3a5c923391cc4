#!/usr/bin/env bash
# Failover time with automatic failover through etcd: from kill -9 of the leader to the
# first produce confirmed through the client by the new leader, over KILLS kills (README
# "Running a cluster"). Starts its own etcd and three brokers (scripts/run-cluster.sh, on
# its ports 7400 and 7411..7432, in a temporary directory), so nothing else may use them.
#
#   scripts/bench-failover.sh [KILLS]     # 20 by default
#
# Each round: find the leader, kill -9 it, then produce one message (the txmq tool, every
# broker in its list, a 1 s request timeout) again and again until one is confirmed; the
# time from the kill to that confirm is the round's. The killed broker is started again and
# must be back in the in-sync set before the next round. Prints every round, then p50, p99
# and max. Uses build/release (scripts/run-cluster.sh builds it) unless TXMQ_BIN_DIR is set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kills=${1:-20}
dir=$(mktemp -d /tmp/txmq-bench-failover-XXXXXX)
all=127.0.0.1:7411,127.0.0.1:7421,127.0.0.1:7431
trap '"$root/scripts/run-cluster.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

"$root/scripts/run-cluster.sh" "$dir" >/dev/null
bin_dir=${TXMQ_BIN_DIR:-$root/build/release}
cli=$bin_dir/cli/txmq
broker=$bin_dir/broker/txmq-broker
"$cli" --broker "$all" topic create failover >/dev/null

now_ms() { date +%s%3N; }

# The id of the broker that leads, as the one that answers says (bounded: 30 s).
leader() {
  local id deadline=$(($(now_ms) + 30000))
  while (($(now_ms) < deadline)); do
    id=$("$cli" --broker "$all" cluster status --json 2>/dev/null |
      /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["etcd"]["leader"] if d.get("etcd") else "")' || true)
    [[ -n $id ]] && { echo "$id"; return; }
    sleep 0.1
  done
  echo "no leader within 30 s" >&2
  exit 1
}

# Waits (bounded: 60 s) until etcd's in-sync set names all three brokers.
all_in_sync() {
  local deadline=$(($(now_ms) + 60000)) n
  while (($(now_ms) < deadline)); do
    n=$("$cli" --broker "$all" cluster status --json 2>/dev/null |
      /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["etcd"]["in_sync"]) if d.get("etcd") else 0)' || true)
    [[ $n == 3 ]] && return
    sleep 0.2
  done
  echo "the in-sync set did not grow back to 3 within 60 s" >&2
  exit 1
}

times=()
for round in $(seq "$kills"); do
  all_in_sync
  id=$(leader)
  pid=$(<"$dir/$id.pid")
  killed=$(now_ms)
  kill -9 "$pid"
  confirmed=""
  # Bounded: 60 s of attempts.
  while (($(now_ms) - killed < 60000)); do
    if echo "round-$round" | "$cli" --broker "$all" --request-timeout-ms 1000 produce failover >/dev/null 2>&1; then
      confirmed=$(now_ms)
      break
    fi
  done
  [[ -n $confirmed ]] || { echo "round $round: nothing confirmed within 60 s of the kill" >&2; exit 1; }
  took=$((confirmed - killed))
  times+=("$took")
  new=$(leader)
  echo "round $round: killed $id, $new confirmed after $took ms"
  # The killed broker comes back as a follower.
  "$broker" --config "$dir/$id.toml" >"$dir/$id.out" 2>>"$dir/$id.log" &
  echo $! >"$dir/$id.pid"
  disown  # its kill -9 next time is the point, not news for this shell
done

printf '%s\n' "${times[@]}" | sort -n | /usr/bin/python3 -c '
import sys
t = [int(x) for x in sys.stdin]
def q(p):
    return t[min(len(t) - 1, max(0, -(-p * len(t) // 100) - 1))]
print(f"failover over {len(t)} kills of the leader: p50 {q(50)} ms, p99 {q(99)} ms, max {t[-1]} ms")
'
