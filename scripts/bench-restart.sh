#!/usr/bin/env bash
# How long a node killed under load takes to serve again: fjall replays the journal left on
# disk before the node opens its ports, so the time follows the journal size, which
# `storage.max_journal_mib` bounds.
#
# Each run starts a fresh release node (loopback ports), drives it with `gridmesh simulate`
# for LOAD seconds, SIGKILLs it, and measures from the restart until /readyz answers. Prints
# the journal left on disk and the time of every run, then the medians.
#
#   scripts/bench-restart.sh                          # 3 runs, 40 s of load, default bound
#   RUNS=5 JOURNAL_MIB=512 scripts/bench-restart.sh   # fjall's own default, for comparison
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} LOAD=${LOAD:-40} JOURNAL_MIB=${JOURNAL_MIB:-128}

cargo build --release -p gridmesh --quiet
B=$PWD/target/release/gridmesh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export GRIDMESH_BOOTSTRAP_PASSWORD=bench-bootstrap-passphrase GRIDMESH_USER=admin
export GRIDMESH_PASSWORD=$GRIDMESH_BOOTSTRAP_PASSWORD
export GRIDMESH_STORAGE__MAX_JOURNAL_MIB=$JOURNAL_MIB RUST_LOG=warn

serve() { # $1 = data dir
  "$B" serve --data-dir "$1" --grpc-addr 127.0.0.1:7390 --http-addr 127.0.0.1:7391 \
    >>"$work/node.log" 2>&1 &
  node=$!
}
wait_ready() {
  for _ in $(seq 1 1200); do
    curl -fs http://127.0.0.1:7391/readyz >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "node not ready after 60 s; see its log:" >&2
  tail -20 "$work/node.log" >&2
  return 1
}

journals=() times=()
for run in $(seq 1 "$RUNS"); do
  data="$work/data-$run"
  serve "$data"
  wait_ready
  timeout $((LOAD + 5)) "$B" simulate -t 127.0.0.1:7390 --meters 5000 --days 20 \
    --no-anomalies >/dev/null 2>&1 &
  load=$!
  sleep "$LOAD"
  kill -KILL "$node"
  wait "$node" 2>/dev/null || true
  kill "$load" 2>/dev/null || true
  wait "$load" 2>/dev/null || true
  mib=$(du -cb "$data"/db/*.jnl | tail -1 | awk '{printf "%.0f", $1 / 1048576}')
  t0=$(date +%s.%N)
  serve "$data"
  wait_ready
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc)
  printf 'run %d: %s MiB of journal after %d s of load, ready %.2f s after restart\n' \
    "$run" "$mib" "$LOAD" "$secs"
  journals+=("$mib") times+=("$secs")
  kill "$node"
  wait "$node" 2>/dev/null || true
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
printf 'median over %d runs (storage.max_journal_mib = %s): %s MiB of journal, ready %.2f s\n' \
  "$RUNS" "$JOURNAL_MIB" "$(median "${journals[@]}")" "$(median "${times[@]}")"
