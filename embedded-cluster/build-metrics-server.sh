#!/usr/bin/env bash
# Builds the real metrics-server (sigs.k8s.io/metrics-server) once and caches it outside the work
# tree, keyed by its version. It is its own binary, not part of minicp: its Kubernetes and
# Prometheus dependencies differ from the control plane's. Prints the binary's path as its last
# line. One build at a time: a second caller waits for the first and reuses its binary.
set -euo pipefail
version=v0.8.0
cache="${KUBEFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeforge}"
bin="$cache/metrics-server-$version"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.build-metrics-server.lock"; flock 9
fi
if [ ! -x "$bin" ]; then
  tmp="$(mktemp -d "$cache/metrics-server-build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "building metrics-server $version (a few minutes cold)..." >&2
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags "-s -w" "sigs.k8s.io/metrics-server/cmd/metrics-server@$version"
  mv "$tmp/metrics-server" "$bin"
fi
echo "$bin"
