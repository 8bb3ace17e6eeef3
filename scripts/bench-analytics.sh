#!/usr/bin/env bash
# Accuracy benchmarks of gridmesh-analytics on public data: day-ahead load forecasting on the
# Taylor England & Wales series and SimBench LV grids, and anomaly detection on SimBench load
# profiles with injected anomalies. Results go to stdout; docs/analytics.md holds the tables.
#
# The data comes from two PyPI packages, installed into a venv under target/ (never committed,
# never used by the tests): pmdarima (taylor.py) and simbench (networks/*/ CSV files).
#
#   scripts/bench-analytics.sh                 # everything
#   scripts/bench-analytics.sh forecast-taylor # one part: forecast-taylor, forecast-simbench,
#                                              # anomaly-simbench
#   SEEDS=9 scripts/bench-analytics.sh anomaly-simbench
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-target/analytics-venv}
DATA=${DATA:-target/analytics-data}
SEEDS=${SEEDS:-5}
PMDARIMA=${PMDARIMA:-pmdarima==2.1.1}
SIMBENCH=${SIMBENCH:-simbench==1.6.3}

fetch_data() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -c 'import pmdarima, simbench' 2>/dev/null ||
    "$VENV/bin/pip" install --quiet "$PMDARIMA" "$SIMBENCH"
  mkdir -p "$DATA"
  "$VENV/bin/python" - "$DATA" <<'PY'
import os, shutil, sys
out = sys.argv[1]
from pmdarima.datasets.taylor import load_taylor
with open(os.path.join(out, "taylor.csv"), "w") as f:
    f.write("demand_mw\n")
    f.writelines(f"{v:.0f}\n" for v in load_taylor())
import simbench
root = os.path.join(os.path.dirname(simbench.__file__), "networks")
for code in ("1-complete_data-mixed-all-0-sw", "1-complete_data-mixed-all-1-sw"):
    dst = os.path.join(out, "simbench", code)
    os.makedirs(dst, exist_ok=True)
    for name in ("Load.csv", "LoadProfile.csv", "Transformer.csv", "RES.csv", "RESProfile.csv"):
        target = os.path.join(dst, name)
        if not os.path.exists(target):
            shutil.copyfile(os.path.join(root, code, name), target)
PY
}

fetch_data
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
nice -n 10 cargo build --release --quiet -p gridmesh-analytics --example bench
BENCH="$CARGO_TARGET_DIR/release/examples/bench"
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(forecast-taylor forecast-simbench anomaly-simbench)
for part in "${parts[@]}"; do
  case "$part" in
    forecast-taylor) "$BENCH" forecast-taylor "$DATA/taylor.csv" ;;
    forecast-simbench)
      for code in 1-complete_data-mixed-all-0-sw 1-complete_data-mixed-all-1-sw; do
        "$BENCH" forecast-simbench "$DATA/simbench/$code"
      done ;;
    anomaly-simbench)
      "$BENCH" anomaly-simbench "$DATA/simbench/1-complete_data-mixed-all-0-sw" --seeds "$SEEDS" \
        --settings "${SETTINGS:-10:0.3,6:0.3,8:0.5,12:0.3}" ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
