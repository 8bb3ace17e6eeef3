#!/usr/bin/env bash
# Ingest throughput, ack latency and CPU per reading of a three-node cluster on this machine,
# for replication factors 1, 2 and 3 (write quorum = factor), plus one node alone.
#
# Each run starts fresh release nodes on empty data directories (loopback ports), drives them
# with `gridmesh simulate` through node 1 (which forwards what the others own) and reads the
# nodes' CPU time from /proc. All processes share the machine's cores, so the figure that
# compares is CPU per reading, not throughput per node.
#
#   scripts/bench-cluster.sh                    # R = 1 2 3, 3 runs each, + 1 node
#   RUNS=5 FACTORS="2" scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} METERS=${METERS:-5000} FEEDERS=${FEEDERS:-50} DAYS=${DAYS:-1}
CONCURRENCY=${CONCURRENCY:-16} BATCH=${BATCH:-1000} FACTORS=${FACTORS:-"1 2 3"}
BLOCK=${BLOCK:-1}

cargo build --release -p gridmesh --quiet
B=target/release/gridmesh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export GRIDMESH_COOKIE=bench-cookie-0123456789abcdef
# Every node bootstraps the same admin; the CLI logs in as it.
export GRIDMESH_BOOTSTRAP_PASSWORD=bench-bootstrap-passphrase GRIDMESH_USER=admin
export GRIDMESH_PASSWORD=$GRIDMESH_BOOTSTRAP_PASSWORD
ticks=$(getconf CLK_TCK)

pids=()
start_nodes() { # $1 = nodes, $2 = factor
  pids=()
  local n=$1 factor=$2 seeds=""
  for i in $(seq "$n"); do seeds="$seeds --seed 127.0.0.1:$((7610 + i))"; done
  for i in $(seq "$n"); do
    rm -rf "$work/n$i"
    local cluster=()
    if [ "$n" -gt 1 ]; then
      cluster=(--name "n$i" --cluster-addr "127.0.0.1:$((7610 + i))" $seeds)
    fi
    GRIDMESH_REPLICATION__FACTOR=$factor GRIDMESH_REPLICATION__WRITE_QUORUM=$factor \
      "$B" serve --data-dir "$work/n$i" --grpc-addr "127.0.0.1:$((7510 + i))" \
      --http-addr "127.0.0.1:$((7580 + i))" "${cluster[@]}" >"$work/n$i.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq "$n"); do
    for _ in $(seq 400); do
      curl -sf "http://127.0.0.1:$((7580 + i))/readyz" >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
  # Every member sees every other before the load starts.
  for _ in $(seq 200); do
    local alive
    alive=$("$B" admin members -t 127.0.0.1:7511 --json 2>/dev/null \
      | python3 -c 'import json,sys; m=json.load(sys.stdin)["members"]; print(sum(1 for x in m if x["state"]=="alive" and x["shards_owned"]>0))' \
      2>/dev/null || echo 0)
    [ "$alive" = "$n" ] && return 0
    sleep 0.1
  done
  echo "cluster did not form" >&2; cat "$work"/n*.log >&2; exit 1
}
cpu_s() { # total CPU seconds of the node processes
  local total=0
  for p in "${pids[@]}"; do
    local t
    t=$(awk '{print $14 + $15}' "/proc/$p/stat")
    total=$((total + t))
  done
  python3 -c "print($total / $ticks)"
}
stop_nodes() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; }

run_set() { # $1 = nodes, $2 = factor, $3 = label
  : >"$work/runs.jsonl"
  for r in $(seq "$RUNS"); do
    start_nodes "$1" "$2"
    before=$(cpu_s)
    out=$("$B" simulate --target 127.0.0.1:7511 --json --no-anomalies --meters "$METERS" \
      --feeders "$FEEDERS" --days "$DAYS" --concurrency "$CONCURRENCY" --batch-size "$BATCH" \
      --block-intervals "$BLOCK")
    after=$(cpu_s)
    echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); d['node_cpu_s']=$after-$before; print(json.dumps(d))" \
      | tee -a "$work/runs.jsonl"
    stop_nodes
  done
  python3 - "$work/runs.jsonl" "$3" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tp = statistics.median(r["throughput_rps"] for r in runs)
p50 = statistics.median(r["latency_ms"]["p50"] for r in runs)
p99 = statistics.median(r["latency_ms"]["p99"] for r in runs)
cpu = statistics.median(r["node_cpu_s"] * 1e6 / r["readings"] for r in runs)
print(f"RESULT {sys.argv[2]}: {tp:,.0f} readings/s, ack p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
      f"node CPU {cpu:.1f} us/reading (medians of {len(runs)} runs)")
PY
}

echo "# $RUNS runs each: $METERS meters, $DAYS days, batch $BATCH, $CONCURRENCY in flight, block $BLOCK"
run_set 1 1 "1 node"
for f in $FACTORS; do
  run_set 3 "$f" "3 nodes, R=W=$f"
done
