#!/usr/bin/env bash
# Installs what the full test suite needs beyond the Rust toolchain: promtool (Debian package
# `prometheus`) to lint a live node's /metrics, and PyJWT (PyPI) for the JWT interop test.
# Idempotent; prints what it does.
set -euo pipefail

if python3 -c "import jwt" >/dev/null 2>&1; then
  echo "PyJWT: present"
elif command -v python3 >/dev/null 2>&1; then
  echo "installing PyJWT (PyPI)..."
  python3 -m pip install --quiet PyJWT >/dev/null 2>&1 \
    || python3 -m pip install --quiet --break-system-packages PyJWT >/dev/null 2>&1 \
    || echo "warning: PyJWT could not be installed; the interop test will be skipped" >&2
fi

if command -v promtool >/dev/null 2>&1; then
  echo "promtool: $(promtool --version 2>&1 | head -n1)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "promtool is missing and cannot be installed here (needs root and apt-get)." >&2
  echo "Install the 'prometheus' package, or run tests without GRIDMESH_REQUIRE_PROMTOOL." >&2
  exit 1
fi
echo "installing promtool (Debian package prometheus)..."
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; then
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends prometheus >/dev/null
fi
# The package starts a Prometheus server on some systems; the tests do not need it.
systemctl stop prometheus >/dev/null 2>&1 || true
echo "promtool: $(promtool --version 2>&1 | head -n1)"
