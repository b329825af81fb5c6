#!/usr/bin/env bash
# Builds the helm binary from its Go module once and caches it outside the work tree, keyed by
# a hash of helm/go.mod and helm/go.sum (the `tool` directive there pins helm's own command:
# helm v3 keeps it in a main package, which cannot be imported, so the module builds it as a
# tool rather than through a main.go of ours). Prints the binary's path as its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")/helm" && pwd)"
cache="${KUBEFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeforge}"
key="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)"
bin="$cache/helm-$key"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  V="$(cd "$here" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
  LD="-s -w -X helm.sh/helm/v3/internal/version.version=$V -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  echo "building helm $V (cold build takes a few minutes on 2 cores)..." >&2
  (cd "$here" && CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags "$LD" -o "$bin.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
