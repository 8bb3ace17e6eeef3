#!/usr/bin/env bash
# End-to-end ingest benchmark of one node with durable (group-commit) acks.
#
# Each run starts a fresh release node on its own empty data directory and drives it with
# `gridmesh simulate` (clean readings, no anomalies) through gRPC. Prints every run and the
# median throughput; then runs at half the median rate and reports ack latency p50/p99.
#
#   scripts/bench-e2e.sh                       # 5 runs, 5000 meters x 2 days (960k readings)
#   RUNS=3 METERS=2000 DAYS=1 scripts/bench-e2e.sh
#   BLOCK=24 scripts/bench-e2e.sh              # backlog-shaped batches (6 h per meter)
#   GRIDMESH_ANALYTICS__ENABLED=false scripts/bench-e2e.sh   # the grid rules off
#   HALF_RUNS=0 GRIDMESH_ACTORS__SHARDS=256 scripts/bench-e2e.sh  # throughput only
#
# Besides throughput it reports the node's CPU time per reading (user + system, from
# /proc/<pid>/stat), which is what the analytics-on/off comparison in docs/benchmarks.md uses.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
. scripts/bench-node.sh

cargo build --release -p gridmesh --quiet
B=target/release/gridmesh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "# $RUNS runs: $(workload)"
: >"$work/runs.jsonl"
: >"$work/cpu.txt"
for i in $(seq "$RUNS"); do
  start_node "$B"
  sim "$B" | tee -a "$work/runs.jsonl"
  # Node CPU seconds for the whole run (startup is a few ms).
  node_cpu_s | tee -a "$work/cpu.txt"
  stop_node
done
median=$(python3 - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(int(statistics.median(r["throughput_rps"] for r in runs)))
PY
)
echo "median throughput: $median readings/s"
python3 - "$work/runs.jsonl" "$work/cpu.txt" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cpu = [float(l) for l in open(sys.argv[2]) if l.strip()]
per = [c * 1e6 / r["accepted"] for c, r in zip(cpu, runs)]
print(f"node CPU per reading: {statistics.median(per):.1f} us (runs: "
      + ", ".join(f"{p:.1f}" for p in per) + ")")
PY

HALF_RUNS=${HALF_RUNS:-3}
[ "$HALF_RUNS" -gt 0 ] || exit 0
half=$((median / 2))
echo "# latency at half that rate ($half readings/s), $HALF_RUNS runs"
: >"$work/half.jsonl"
for i in $(seq "$HALF_RUNS"); do
  start_node "$B"
  sim "$B" --rate "$half" | tee -a "$work/half.jsonl"
  stop_node
done
python3 - "$work/half.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
p50 = statistics.median(r["latency_ms"]["p50"] for r in runs)
p99 = statistics.median(r["latency_ms"]["p99"] for r in runs)
print(f"ack latency at half rate: p50 {p50:.1f} ms, p99 {p99:.1f} ms (medians of {len(runs)} runs)")
PY
