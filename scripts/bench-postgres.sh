#!/usr/bin/env bash
# The same readings GridMesh ingests (the simulator's clean stream), loaded into PostgreSQL 15
# with COPY in 10,000-row transactions into a table keyed by (meter, ts), with PostgreSQL's
# default durability (synchronous_commit = on, fsync = on). Needs root (installs
# postgresql-15 from Debian when missing and runs a throwaway cluster in a temp directory).
#
#   scripts/bench-postgres.sh                  # 5000 meters x 2 days, 3 runs, median
#   METERS=2000 DAYS=1 RUNS=1 scripts/bench-postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."
METERS=${METERS:-5000} DAYS=${DAYS:-2} RUNS=${RUNS:-3} CHUNK=${CHUNK:-10000} PORT=${PG_PORT:-55432}

if ! ls /usr/lib/postgresql/15/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql-15..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 >/dev/null; }
fi
PG=/usr/lib/postgresql/15/bin

cargo build --release -p gridmesh --example dump_readings --quiet
work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  su postgres -c "$PG/pg_ctl -D $work/pgdata -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

target/release/examples/dump_readings "$METERS" "$DAYS" >"$work/readings.csv"
rows=$(wc -l <"$work/readings.csv")
split -l "$CHUNK" -d -a 5 "$work/readings.csv" "$work/chunk_"
chown -R postgres "$work"

echo "# $rows readings, COPY in transactions of $CHUNK rows, $RUNS runs"
: >"$work/rates"
for i in $(seq "$RUNS"); do
  rm -rf "$work/pgdata"
  su postgres -c "$PG/initdb -D $work/pgdata -A trust" >/dev/null
  su postgres -c "$PG/pg_ctl -D $work/pgdata -o '-p $PORT -k $work' -l $work/pg.log -w start" >/dev/null
  psql="psql -h $work -p $PORT -U postgres -q -v ON_ERROR_STOP=1"
  $psql -c "create table readings (meter text not null, ts_ms bigint not null,
            import_register_wh double precision, interval_import_wh double precision,
            active_power_w double precision, reactive_power_var double precision,
            voltage_l1_v double precision, primary key (meter, ts_ms))"
  {
    for f in "$work"/chunk_*; do
      echo "begin;"
      echo "\\copy readings from '$f' with (format csv)"
      echo "commit;"
    done
  } >"$work/load.sql"
  start=$(date +%s.%N)
  $psql -f "$work/load.sql"
  end=$(date +%s.%N)
  count=$($psql -At -c "select count(*) from readings")
  rate=$(python3 -c "print(int($count / ($end - $start)))")
  echo "run $i: $count rows in $(python3 -c "print(round($end - $start, 2))") s = $rate rows/s"
  echo "$rate" >>"$work/rates"
  su postgres -c "$PG/pg_ctl -D $work/pgdata -m fast stop" >/dev/null
done
echo "median: $(sort -n "$work/rates" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') rows/s"
