#!/usr/bin/env bash
# What security costs: one txmq-broker binary run plain and with TLS + authentication (SCRAM-
# SHA-256, the ACL on), in alternating rounds of the same run (these machines are shared and
# noisy: only a ratio within one run means anything). Each round runs durable produce and
# consume + durable ack against each; then the connection set-up time (TCP, the TLS
# handshake, the hello with SCRAM, one request) of each, over many connections.
#
#   scripts/bench-security.sh [ROUNDS] [MESSAGES] [CONNECTIONS]
#
# Binaries: TXMQ_BROKER_BIN, TXMQ_BENCH_BIN and TXMQ_CLI_BIN, else build/release's.
# Needs the openssl command (make the certificates) and /usr/bin/python3 (the medians).
set -euo pipefail
rounds=${1:-5}
messages=${2:-500000}
connections=${3:-200}
build=$(dirname "$0")/../build/release
broker=${TXMQ_BROKER_BIN:-$build/broker/txmq-broker}
bench=${TXMQ_BENCH_BIN:-$build/bench/txmq-bench}
cli=${TXMQ_CLI_BIN:-$build/cli/txmq}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# A CA, a broker certificate for 127.0.0.1 it signed, one user allowed everything the bench does.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=txmq-bench-ca \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=txmq-broker \
  -keyout "$dir/broker.key" -out "$dir/broker.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
openssl x509 -req -in "$dir/broker.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
  -extfile "$dir/san.ext" -out "$dir/broker.pem" 2>/dev/null
(umask 077 && echo "bench-password" >"$dir/password")
"$cli" users add bench --users-file "$dir/users" --password-file "$dir/password" >/dev/null
cat >"$dir/acl.toml" <<ACL
[[allow]]
users = ["bench"]
topics = ["*"]
operations = ["produce", "consume", "describe", "create"]
[[allow]]
users = ["bench"]
groups = ["*"]
operations = ["consume", "describe", "configure"]
ACL
cat >"$dir/secure.toml" <<TOML
[tls]
enabled = true
cert_file = "$dir/broker.pem"
key_file = "$dir/broker.key"
[auth]
enabled = true
users_file = "$dir/users"
acl_file = "$dir/acl.toml"
TOML
secure_flags=(--broker-arg=--config="$dir/secure.toml" --tls-ca "$dir/ca.pem" --user bench --password-file "$dir/password")
results=$dir/results

run_one() {  # LABEL ROUND [FLAGS...]
  local label=$1 round=$2 out p c
  shift 2
  out=$("$bench" --broker-bin "$broker" "$@" -n "$messages" --skip-baseline --consume "$messages" \
        --max-seconds 60 2>&1) || { echo "$out" >&2; return 1; }
  p=$(sed -n 's/^produce (durable): .* = \([0-9]*\) msg\/s.*/\1/p' <<<"$out")
  c=$(sed -n 's/^consume + durable ack .* = \([0-9]*\) msg\/s.*/\1/p' <<<"$out")
  echo "$label $p $c" >>"$results"
  echo "round $round $label: produce $p msg/s, consume+ack $c msg/s"
}

for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then run_one plain "$r"; run_one secure "$r" "${secure_flags[@]}"
  else run_one secure "$r" "${secure_flags[@]}"; run_one plain "$r"; fi
done

/usr/bin/python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(label, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == label)
for name, i in (("durable produce (msg/s)", 1), ("consume + ack (msg/s)", 2)):
    p, s = med("plain", i), med("secure", i)
    print(f"{name:26} plain {p:>9.0f}  TLS+SCRAM {s:>9.0f}  TLS+SCRAM/plain {s / p:.2f}")
PY
"$bench" --broker-bin "$broker" --connect-rounds "$connections"
"$bench" --broker-bin "$broker" --connect-rounds "$connections" "${secure_flags[@]}"
