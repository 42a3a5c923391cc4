#!/usr/bin/env bash
# What replication costs: one txmq-broker binary run standalone (no [replication]), as a
# sync trio (a leader and two followers, min_insync = 2), as an async trio, and as an
# async trio whose followers pace their fetches (fetch_interval_ms = PACE_MS), in
# alternating rounds of the same run (these machines are shared and noisy: only a ratio
# within one run means anything). Every broker is on loopback, with a fresh data
# directory each round. Each round measures, against each setup:
#   - durable produce: txmq-bench, 100-byte messages, batches of 1000, 20000 in flight;
#   - confirm-each latency: one message in flight at a time, p50 and p99;
# and, in the sync trio, catch-up: a follower restarted empty once the backlog is on the
# leader, timed until its last index equals the leader's (from each broker's metric
# txmq_replication_last_index).
#
#   scripts/bench-replication.sh [ROUNDS] [MESSAGES]
#
# ROUNDS (3) of MESSAGES (500000) each; CONFIRM_EACH (2000) confirm-each messages;
# PACE_MS (20) for the paced async trio. SETUPS picks and orders the setups (default
# "standalone sync async paced"); "cluster" is the sync trio with its leader elected
# through a local etcd ([cluster], README "Running a cluster"), to show that etcd stays
# off the write path: compare it with "sync" (SETUPS="sync cluster").
# Binaries: TXMQ_BROKER_BIN, TXMQ_BENCH_BIN and TXMQ_CLI_BIN, else build/release's.
# Needs /usr/bin/python3 (free ports, metrics, the medians).
set -euo pipefail
rounds=${1:-3}
messages=${2:-500000}
each=${CONFIRM_EACH:-2000}
pace=${PACE_MS:-20}
build=$(dirname "$0")/../build/release
# shellcheck source=lib/local-processes.sh
source "$(dirname "$0")/lib/local-processes.sh"
broker=${TXMQ_BROKER_BIN:-$build/broker/txmq-broker}
bench=${TXMQ_BENCH_BIN:-$build/bench/txmq-bench}
cli=${TXMQ_CLI_BIN:-$build/cli/txmq}
dir=$(mktemp -d)
cleanup() {
  # Only this shell's own background jobs: the brokers of a trio still running.
  local p
  for p in $(jobs -p); do kill -TERM "$p" 2>/dev/null || true; done
  wait || true
  rm -rf "$dir"
}
trap cleanup EXIT
results=$dir/results

free_port() {  # a port free on 127.0.0.1 now (bound to 0, read, closed)
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

metric() {  # METRICS_PORT NAME: the sample's value, or nothing when absent or unreachable
  /usr/bin/python3 - "$1" "$2" <<'PY' || true
import sys, urllib.request
try:
    page = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=2).read().decode()
except OSError:
    sys.exit(0)
for line in page.splitlines():
    name = line.split("{")[0].split(" ")[0]
    if name == sys.argv[2]:
        print(int(float(line.rsplit(" ", 1)[1])))
        break
PY
}

# -- a setup: one broker, or a trio -----------------------------------------------------------------------------------

start_member() {  # DIR I: starts member I (0-2) of the setup whose configs are in DIR
  local t=$1 i=$2 pid
  : >"$t/b$i.out"
  "$broker" --config "$t/b$i.toml" --log-level warn >"$t/b$i.out" 2>>"$t/b$i.log" &
  pid=$!
  echo "$pid" >"$t/b$i.pid"
  for _ in $(seq 600); do  # at most 60 s
    grep -q '^listening on ' "$t/b$i.out" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "member b$i did not start; the end of its log:" >&2
  tail -n 20 "$t/b$i.log" >&2
  return 1
}

stop_member() {  # DIR I
  local pid
  pid=$(<"$1/b$2.pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# MODE (standalone, sync, async or paced): writes the configs, starts the broker (standalone:
# no [replication]) or the three, and sets setup to their directory. Not a subshell: the
# brokers must be this shell's children, to be waited for and stopped. Every setup is
# started the same way, so that only replication differs.
start_setup() {
  local mode=$1 t i n=3 peers=""
  [[ $mode == standalone ]] && n=1
  t=$(mktemp -d "$dir/$mode-XXXX")
  local ports=() metrics=() etcd_client="" etcd_peer="" rmode=$mode
  [[ $mode == paced ]] && rmode=async
  [[ $mode == cluster ]] && rmode=sync
  if [[ $mode == cluster ]]; then
    etcd_client=127.0.0.1:$(free_port)
    etcd_peer=127.0.0.1:$(free_port)
    start_etcd e "$t" "$etcd_client" "$etcd_peer" || exit 1
  fi
  for ((i = 0; i < n; i++)); do ports+=("$(free_port)"); metrics+=("$(free_port)"); done
  for ((i = 0; i < n; i++)); do peers+="b$i = \"127.0.0.1:${ports[i]}\""$'\n'; done
  for ((i = 0; i < n; i++)); do
    cat >"$t/b$i.toml" <<TOML
[broker]
listen = "127.0.0.1:${ports[i]}"
metrics_listen = "127.0.0.1:${metrics[i]}"
data_dir = "$t/b$i-data"
TOML
    [[ $mode == standalone ]] || cat >>"$t/b$i.toml" <<TOML

[replication]
id = "b$i"
$([[ $mode == cluster ]] || echo "role = \"$( ((i == 0)) && echo leader || echo follower)\"")
mode = "$rmode"
min_insync = 2
$([[ $mode == paced ]] && echo "fetch_interval_ms = $pace")

[replication.peers]
$peers
$([[ $mode == cluster ]] && printf '[cluster]\netcd_endpoints = ["http://%s"]\n' "$etcd_client")
TOML
    echo "${ports[i]}" >"$t/b$i.port"
    echo "${metrics[i]}" >"$t/b$i.metrics"
  done
  for ((i = 0; i < n; i++)); do start_member "$t" "$i"; done
  echo "$n" >"$t/members"
  setup=$t
}

stop_setup() {  # DIR
  local i
  for ((i = 0; i < $(<"$1/members"); i++)); do stop_member "$1" "$i"; done
  if [[ -f $1/etcd.pid ]]; then
    kill -TERM "$(<"$1/etcd.pid")" 2>/dev/null || true
    wait "$(<"$1/etcd.pid")" 2>/dev/null || true
  fi
}

# The address of the member that leads: b0, or in a cluster the one etcd elected (waited
# for, at most 60 s).
leader_of() {  # DIR
  local t=$1 i id
  [[ -f $t/etcd.pid ]] || { echo "127.0.0.1:$(<"$t/b0.port")"; return; }
  for _ in $(seq 600); do
    for ((i = 0; i < 3; i++)); do
      id=$("$cli" --broker "127.0.0.1:$(<"$t/b$i.port")" cluster status --json 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"] if d["role"] == "leader" else "")' ||
        true)
      [[ -n $id ]] && { echo "127.0.0.1:$(<"$t/b$i.port")"; return; }
    done
    sleep 0.1
  done
  echo "no leader elected in 60 s" >&2
  return 1
}

# -- one measure ------------------------------------------------------------------------------

# Runs txmq-bench with FLAGS...; prints "RATE P50 P99" of its produce line.
bench_produce() {
  local out
  out=$("$bench" "$@" --skip-baseline --max-seconds 120 2>&1) || { echo "$out" >&2; return 1; }
  sed -n 's/^produce (durable): .* = \([0-9]*\) msg\/s.* p50 \([0-9.]*\) ms, p99 \([0-9.]*\) ms.*/\1 \2 \3/p' <<<"$out"
}

# Catch-up in the sync trio: b2 starts again, empty, behind the whole backlog.
catch_up() {  # DIR ROUND
  local t=$1 last got start_ms end_ms
  last=$(metric "$(<"$t/b0.metrics")" txmq_replication_last_index)
  if [[ -z $last ]]; then
    echo "round $2 catch-up: skipped (the leader has no txmq_replication_last_index metric)"
    return
  fi
  stop_member "$t" 2
  rm -rf "$t/b2-data"
  start_ms=$(date +%s%3N)
  start_member "$t" 2
  got=""
  for _ in $(seq 12000); do  # at most 10 minutes
    got=$(metric "$(<"$t/b2.metrics")" txmq_replication_last_index)
    [[ -n $got && $got -ge $last ]] && break
    sleep 0.05
  done
  end_ms=$(date +%s%3N)
  if [[ -n $got && $got -ge $last ]]; then
    echo "catchup $((end_ms - start_ms))" >>"$results"
    echo "round $2 catch-up of $last records ($messages + $each messages): $((end_ms - start_ms)) ms"
  else
    echo "round $2 catch-up: b2 reached index ${got:-?} of $last in 10 minutes" >&2
  fi
}

run_setup() {  # MODE ROUND
  local mode=$1 t leader p e topic
  start_setup "$mode"
  t=$setup
  leader=$(leader_of "$t")
  # In sync mode the leader refuses writes (NotEnoughReplicas) until a follower has joined:
  # create the topics once it accepts them.
  for topic in bench each; do
    for _ in $(seq 600); do  # at most 60 s
      "$cli" --broker "$leader" topic create "$topic" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  p=$(bench_produce --broker "$leader" --topic bench -n "$messages")
  e=$(bench_produce --broker "$leader" --topic each -n "$each" --batch 1 --in-flight 1)
  echo "$mode ${p%% *} ${e#* }" >>"$results"
  echo "round $2 $mode: produce ${p%% *} msg/s, confirm-each p50/p99 ${e#* } ms"
  [[ $mode == sync ]] && catch_up "$t" "$2"
  stop_setup "$t"
  rm -rf "$t"
}

# Each round starts one setup later in the order than the last, so that none is always first.
read -r -a setups <<<"${SETUPS:-standalone sync async paced}"
for ((r = 1; r <= rounds; r++)); do
  for ((k = 0; k < ${#setups[@]}; k++)); do run_setup "${setups[(r - 1 + k) % ${#setups[@]}]}" "$r"; done
done

/usr/bin/python3 - "$results" "$messages" "$pace" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(label, i):
    values = [float(r[i]) for r in rows if r[0] == label]
    return statistics.median(values) if values else float("nan")
c = med("cluster", 1)
if c == c:  # measured
    y = med("sync", 1)
    print(f"durable produce (msg/s)  sync {y:>9.0f}  cluster (etcd-elected) {c:>9.0f}  cluster/sync {c / y:.2f}")
    for name, i in (("confirm-each p50 (ms)", 2), ("confirm-each p99 (ms)", 3)):
        print(f"{name:24} sync {med('sync', i):>9.2f}  cluster {med('cluster', i):>9.2f}")
    if med("standalone", 1) != med("standalone", 1):
        sys.exit(0)
s, y, a, p = (med(m, 1) for m in ("standalone", "sync", "async", "paced"))
print(f"durable produce (msg/s)  standalone {s:>9.0f}  sync {y:>9.0f}  async {a:>9.0f}  paced {p:>9.0f}  "
      f"sync/standalone {y / s:.2f}  async/standalone {a / s:.2f}  paced/standalone {p / s:.2f}")
for name, i in (("confirm-each p50 (ms)", 2), ("confirm-each p99 (ms)", 3)):
    s, y, a, p = (med(m, i) for m in ("standalone", "sync", "async", "paced"))
    # The issue's bound is a difference: standalone + one loopback round trip + one
    # follower fsync.
    print(f"{name:24} standalone {s:>9.2f}  sync {y:>9.2f}  async {a:>9.2f}  paced {p:>9.2f}  "
          f"sync {y - s:+.2f} ms  async {a - s:+.2f} ms  paced {p - s:+.2f} ms")
print(f"paced: the async trio with fetch_interval_ms = {sys.argv[3]}")
catchup = [float(r[1]) for r in rows if r[0] == "catchup"]
if catchup:
    print(f"catch-up of {sys.argv[2]} messages by an empty follower: median {statistics.median(catchup) / 1000:.1f} s")
PY
