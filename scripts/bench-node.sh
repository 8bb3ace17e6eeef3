# Sourced by bench-e2e.sh and bench-ab.sh: the workload knobs, one fresh release node on an
# empty data directory, and `gridmesh simulate` against it.
#
# The caller sets `work` (a temporary directory); `start_node BINARY` starts a node and sets
# `node_pid`; `sim BINARY [simulate flags…]` drives it; `node_cpu_s` prints the node's CPU
# seconds so far (user + system, from /proc/<pid>/stat).
METERS=${METERS:-5000} FEEDERS=${FEEDERS:-50} DAYS=${DAYS:-2}
CONCURRENCY=${CONCURRENCY:-16} BATCH=${BATCH:-1000} SYNC=${SYNC:-group} BLOCK=${BLOCK:-1}
GRPC=127.0.0.1:${GRPC_PORT:-7300} HTTP=127.0.0.1:${HTTP_PORT:-7380}

start_node() {
  rm -rf "$work/data"
  "$1" serve --data-dir "$work/data" --grpc-addr "$GRPC" --http-addr "$HTTP" --sync "$SYNC" \
    >"$work/node.log" 2>&1 &
  node_pid=$!
  for _ in $(seq 200); do
    curl -sf "http://$HTTP/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "node did not become ready:" >&2; cat "$work/node.log" >&2; exit 1
}

stop_node() { kill -TERM "$node_pid"; wait "$node_pid" || true; }

sim() {
  local bin=$1; shift
  # A fresh node generates its bootstrap admin's password into its data directory.
  GRIDMESH_USER=admin GRIDMESH_PASSWORD_FILE="$work/data/bootstrap-admin-password" \
  "$bin" simulate --target "$GRPC" --json --no-anomalies --meters "$METERS" \
    --feeders "$FEEDERS" --days "$DAYS" --concurrency "$CONCURRENCY" --batch-size "$BATCH" \
    --block-intervals "$BLOCK" "$@"
}

node_cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$node_pid/stat"; }

workload() {
  echo "$METERS meters, $DAYS days, batch $BATCH, $CONCURRENCY in flight, sync=$SYNC, block=$BLOCK"
}
