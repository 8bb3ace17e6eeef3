#!/usr/bin/env bash
# The README's test command: formatting, lints, and every test of the workspace (unit,
# property, actor supervision, and multi-process integration tests against real nodes).
#
#   scripts/test.sh            # as CI runs it (installs promtool when it can)
#   cargo test --workspace     # the same tests; the promtool lint is skipped without promtool
set -euo pipefail
cd "$(dirname "$0")/.."

if scripts/install-test-deps.sh; then
  export GRIDMESH_REQUIRE_PROMTOOL=1
  if python3 -c "import jwt" >/dev/null 2>&1; then export GRIDMESH_REQUIRE_PYJWT=1; fi
else
  echo "warning: continuing without promtool; the /metrics lint test will be skipped" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
log=$(mktemp)
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .*' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .*' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
ignored=$(grep -Eo '^test result: .*' "$log" | grep -Eo '[0-9]+ ignored' | awk '{s+=$1} END {print s+0}')
rm -f "$log"
echo
echo "summary: ${passed} passed, ${failed} failed, ${ignored} skipped"
exit "$status"
