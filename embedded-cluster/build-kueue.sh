#!/usr/bin/env bash
# Builds the real Kueue manager (sigs.k8s.io/kueue, cmd/kueue) once and caches it outside the work
# tree, keyed by its version, with Kueue's CRDs from the same module beside it (crds/*.yaml). It is
# its own binary, not part of minicp: its Kubernetes and controller-runtime versions differ from the
# control plane's. Prints the binary's path as its last line. One build at a time: a second caller
# waits for the first and reuses its binary.
set -euo pipefail
version=v0.17.0
module=sigs.k8s.io/kueue
cache="${KUBEFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeforge}"
out="$cache/kueue-$version"
bin="$out/kueue"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.build-kueue.lock"; flock 9
fi
if [ ! -x "$bin" ]; then
  tmp="$(mktemp -d "$cache/kueue-build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "building kueue $version (several minutes cold)..." >&2
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags "-s -w -X $module/pkg/version.GitVersion=$version" "$module/cmd/kueue@$version"
  src="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  mkdir -p "$tmp/out/crds"
  cp "$src"/config/components/crd/bases/*.yaml "$tmp/out/crds/"
  chmod -R u+w "$tmp/out/crds"
  mv "$tmp/kueue" "$tmp/out/kueue"
  rm -rf "$out"; mv "$tmp/out" "$out"
fi
echo "$bin"
