# Sourced by the scripts that start local brokers (and etcd) in the background and stop
# them again: scripts/run-replicas.sh, scripts/run-cluster.sh, scripts/bench-replication.sh.

# stop_started NAME PIDFILE COMM: SIGTERM to the process the pid file names, only when it
# is still a COMM (a pid file may be stale, its pid reused); waits up to 10 s for it.
stop_started() {
  local name=$1 file=$2 comm=$3 pid
  [[ -f $file ]] || return 0
  pid=$(<"$file")
  if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]]; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "$name (pid $pid) did not stop in 10 s" >&2; else echo "stopped $name"; fi
  fi
  rm -f "$file"
}

# running_started PIDFILE COMM: true when the pid file names a live COMM.
running_started() {
  [[ -f $1 ]] && [[ $(cat "/proc/$(<"$1")/comm" 2>/dev/null) == "$2" ]]
}

# wait_for_line NAME FILE PATTERN PID LOG: polls FILE for a line matching PATTERN (grep)
# every 0.1 s for up to 30 s, or until PID exits. On failure prints the end of LOG and
# returns 1.
wait_for_line() {
  local name=$1 file=$2 pattern=$3 pid=$4 log=$5
  for _ in $(seq 300); do
    grep -q "$pattern" "$file" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q "$pattern" "$file" && return 0
  echo "$name did not start; the end of $log:" >&2
  tail -n 20 "$log" >&2
  return 1
}

# start_etcd NAME DIR CLIENT PEER: a one-member etcd named NAME in the background, its data
# in DIR/etcd-data, its log DIR/etcd.log, its pid in DIR/etcd.pid, serving clients on
# http://CLIENT (HOST:PORT) and peers on http://PEER; elections in a second (a busy 2-core
# machine needs no less). Returns once it serves clients, or 1 (with its log's end).
start_etcd() {
  local name=$1 dir=$2 client=$3 peer=$4
  etcd --name "$name" --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://$client" --advertise-client-urls "http://$client" \
    --listen-peer-urls "http://$peer" --initial-advertise-peer-urls "http://$peer" \
    --initial-cluster "$name=http://$peer" --heartbeat-interval 100 --election-timeout 1000 \
    >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  wait_for_line etcd "$dir/etcd.log" 'serving insecure client requests' "$(<"$dir/etcd.pid")" "$dir/etcd.log"
}
