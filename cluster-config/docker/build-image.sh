#!/usr/bin/env bash
# Builds local images of a GridMesh node (and optionally Prometheus) with no base image to pull:
# `FROM scratch` plus a root filesystem assembled here from binaries already on this machine.
#
#   cluster-config/docker/build-image.sh [GRIDMESH_BINARY]     # image gridmesh:local
#   WITH_PROMETHEUS=1 cluster-config/docker/build-image.sh     # also gridmesh-prometheus:local
#
# A static binary (e.g. built for x86_64-unknown-linux-musl) is copied alone. A dynamically
# linked one (the usual glibc build) is copied with every library `ldd` lists, at the same
# paths, so the image runs it without a distribution underneath.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="${1:-${GRIDMESH_BIN:-$here/../../target/release/gridmesh}}"
tag="${GRIDMESH_IMAGE:-gridmesh:local}"

if ! command -v docker >/dev/null 2>&1; then
  echo "docker is not installed; nothing to build" >&2
  exit 3
fi
if ! docker info >/dev/null 2>&1; then
  echo "no Docker engine answers (docker info failed); nothing to build" >&2
  exit 3
fi
if [ ! -x "$binary" ]; then
  echo "no gridmesh binary at $binary; build it (cargo build --release -p gridmesh)" >&2
  echo "or pass its path as the first argument" >&2
  exit 2
fi

# Copies $1 to $2/$3 and every library ldd lists to the same path under $2.
rootfs_for() {
  local bin="$1" root="$2" name="$3"
  mkdir -p "$root/$(dirname "$name")"
  cp "$bin" "$root/$name"
  if ldd "$bin" >/dev/null 2>&1; then
    ldd "$bin" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  fi
}

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
rootfs_for "$binary" "$context/rootfs" gridmesh
mkdir -p "$context/rootfs/data" "$context/rootfs/tmp"
cp "$here/Dockerfile" "$context/Dockerfile"
echo "building $tag from $binary ($(du -sh "$context/rootfs" | cut -f1) root filesystem)"
docker build -q -t "$tag" "$context" >/dev/null
echo "built $tag"

if [ "${WITH_PROMETHEUS:-0}" = "1" ]; then
  prometheus="$(command -v prometheus || true)"
  if [ -z "$prometheus" ]; then
    echo "no prometheus binary here (Debian package prometheus); skipping its image" >&2
    exit 0
  fi
  pcontext="$(mktemp -d)"
  trap 'rm -rf "$context" "$pcontext"' EXIT
  rootfs_for "$prometheus" "$pcontext/rootfs" bin/prometheus
  mkdir -p "$pcontext/rootfs/prometheus" "$pcontext/rootfs/etc/prometheus"
  cp "$here/prometheus.yml" "$pcontext/rootfs/etc/prometheus/prometheus.yml"
  cp "$here/Dockerfile.prometheus" "$pcontext/Dockerfile"
  docker build -q -t gridmesh-prometheus:local "$pcontext" >/dev/null
  echo "built gridmesh-prometheus:local from $prometheus"
fi
