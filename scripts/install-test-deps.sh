#!/usr/bin/env bash
# Installs what the full test suite needs beyond the Rust toolchain:
# - promtool (Debian package `prometheus`) to lint a live node's /metrics;
# - PyJWT (PyPI) for the JWT interop test (skipped with a message without it);
# - iproute2 and nftables for the network chaos schedule (chaos-tests/tests/ci_network.rs),
#   which runs only as root; without them it skips with a message.
# Idempotent; prints what it does. Fails only when promtool cannot be had.
set -euo pipefail

can_install() {
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "$@" >/dev/null
  fi
}

# Network chaos tools: only useful as root, so only installed as root.
if [ "$(id -u)" -eq 0 ]; then
  missing=()
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  if [ "${#missing[@]}" -gt 0 ] && can_install; then
    echo "installing network chaos tools: ${missing[*]}..."
    apt_install "${missing[@]}" || echo "warning: could not install ${missing[*]}" >&2
  fi
  echo "network chaos tools: ip $(command -v ip >/dev/null && echo yes || echo no)," \
    "nft $(command -v nft >/dev/null && echo yes || echo no)"
fi

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
if ! can_install; then
  echo "promtool is missing and cannot be installed here (needs root and apt-get)." >&2
  echo "Install the 'prometheus' package, or run tests without GRIDMESH_REQUIRE_PROMTOOL." >&2
  exit 1
fi
echo "installing promtool (Debian package prometheus)..."
apt_install prometheus
# The package starts a Prometheus server on some systems; the tests do not need it.
systemctl stop prometheus >/dev/null 2>&1 || true
echo "promtool: $(promtool --version 2>&1 | head -n1)"
