#!/usr/bin/env bash
# Compares two txmq-broker binaries with txmq-bench, in alternating rounds of the same run
# (these machines are shared and noisy: only a ratio within one run means anything).
# Each round runs durable produce, consume + durable ack, and transactions against each
# broker, the order of the two brokers swapped every round, and the medians and their
# ratios (new / old) are printed at the end.
#
#   scripts/bench-compare.sh OLD_BROKER NEW_BROKER [ROUNDS] [MESSAGES] [TRANSACTIONS]
#
# txmq-bench comes from TXMQ_BENCH_BIN, else build/release/bench/txmq-bench.
set -euo pipefail
old=${1:?usage: bench-compare.sh OLD_BROKER NEW_BROKER [ROUNDS] [MESSAGES] [TRANSACTIONS]}
new=${2:?usage: bench-compare.sh OLD_BROKER NEW_BROKER [ROUNDS] [MESSAGES] [TRANSACTIONS]}
rounds=${3:-7}
messages=${4:-200000}
transactions=${5:-200000}
bench=${TXMQ_BENCH_BIN:-$(dirname "$0")/../build/release/bench/txmq-bench}
results=$(mktemp)
trap 'rm -f "$results"' EXIT

run_one() {  # LABEL BROKER ROUND
  local out
  out=$("$bench" --broker-bin "$2" -n "$messages" --skip-baseline --consume "$messages" \
        --transactions "$transactions" --max-seconds 60 2>&1) || { echo "$out" >&2; return 1; }
  local p c t
  p=$(sed -n 's/^produce (durable): .* = \([0-9]*\) msg\/s.*/\1/p' <<<"$out")
  c=$(sed -n 's/^consume + durable ack .* = \([0-9]*\) msg\/s.*/\1/p' <<<"$out")
  t=$(sed -n 's/^transactions via .* = \([0-9]*\) txn\/s.*/\1/p' <<<"$out")
  echo "$1 $p $c $t" >>"$results"
  echo "round $3 $1: produce $p msg/s, consume+ack $c msg/s, transactions $t txn/s"
}

for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then run_one old "$old" "$r"; run_one new "$new" "$r"
  else run_one new "$new" "$r"; run_one old "$old" "$r"; fi
done

/usr/bin/python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(label, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == label)
for name, i in (("durable produce (msg/s)", 1), ("consume + ack (msg/s)", 2), ("transactions (txn/s)", 3)):
    o, n = med("old", i), med("new", i)
    print(f"{name:26} old {o:>9.0f}  new {n:>9.0f}  new/old {n / o:.2f}")
PY
