#!/usr/bin/env bash
# Interleaved A/B comparison of two `gridmesh` binaries on the end-to-end ingest benchmark.
#
# This machine's speed drifts by ±10 % over tens of minutes, more than most single changes
# are worth, so two sets of runs taken one after the other compare the drift as much as the
# change. Here the runs alternate A, B, A, B, … on fresh nodes, each driven by A's
# `simulate` (the client stays the same), and the medians are compared.
#
#   cp target/release/gridmesh /tmp/gridmesh-before    # build the baseline first
#   # … change, cargo build --release -p gridmesh …
#   scripts/bench-ab.sh /tmp/gridmesh-before target/release/gridmesh
#   PAIRS=7 BLOCK=24 scripts/bench-ab.sh A B
#
# Same workload knobs as scripts/bench-e2e.sh (METERS, FEEDERS, DAYS, CONCURRENCY, BATCH,
# SYNC, BLOCK); PAIRS (default 5) runs of each.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BINARY_A BINARY_B" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
PAIRS=${PAIRS:-5}
. scripts/bench-node.sh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

run_one() { # $1 = label, $2 = binary; the client is always A's
  start_node "$2"
  local out cpu
  out=$(sim "$A")
  cpu=$(node_cpu_s)
  stop_node
  echo "$1 $cpu $out" | tee -a "$work/runs.txt" | cut -c1-100
}

echo "# A = $A"
echo "# B = $B"
echo "# $PAIRS pairs: $(workload)"
for i in $(seq "$PAIRS"); do
  run_one A "$A"
  run_one B "$B"
done
python3 - "$work/runs.txt" <<'PY'
import json, statistics, sys
rows = {"A": [], "B": []}
for line in open(sys.argv[1]):
    label, cpu, out = line.split(" ", 2)
    r = json.loads(out)
    rows[label].append((r["throughput_rps"], float(cpu) * 1e6 / r["accepted"]))
med = {}
for label, runs in rows.items():
    rps = statistics.median(t for t, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    med[label] = (rps, cpu)
    print(f"{label}: {rps:9.0f} readings/s, {cpu:5.2f} us node CPU per reading (runs: "
          + ", ".join(f"{t / 1000:.1f}k/{c:.1f}" for t, c in runs) + ")")
(ra, ca), (rb, cb) = med["A"], med["B"]
print(f"B vs A: throughput {100 * (rb / ra - 1):+.1f} %, "
      f"CPU per reading {100 * (cb / ca - 1):+.1f} %")
PY
