#!/usr/bin/env bash
# What authentication costs (docs/benchmarks.md, "Security"): per-call check, argon2id, login
# latency and unary ingest with and without the auth layer (in-process, example auth_cost),
# then the time a revocation takes to be refused on all three nodes of a real cluster (test
# auth_cluster, which prints it). RUNS runs of each; the medians are what the docs quote.
#
#   scripts/bench-auth.sh            # RUNS=5
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}

cargo build --release -p gridmesh --example auth_cost --quiet
for i in $(seq "$RUNS"); do
  echo "## auth_cost run $i"
  target/release/examples/auth_cost 20 20000
done
for i in $(seq "$RUNS"); do
  echo "## revocation run $i"
  cargo test -q --release -p gridmesh --test auth_cluster -- --nocapture 2>&1 | grep '^revocation'
done
