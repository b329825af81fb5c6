#!/usr/bin/env bash
# Builds the control-plane binary once and caches it outside the work tree, keyed by a hash
# of the Go sources. Prints the binary's path as its last line. One build at a time: a second
# caller waits for the first and reuses its binary.
set -euo pipefail
here="$(cd "$(dirname "$0")/minicp" && pwd)"
cache="${KUBEFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeforge}"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
bin="$cache/minicp-$key"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.build-minicp.lock"; flock 9
fi
if [ ! -x "$bin" ]; then
  V=v1.34.4; P=k8s.io/component-base/version; C=k8s.io/client-go/pkg/version
  LD="-s -w -X $P.gitVersion=$V -X $P.gitMajor=1 -X $P.gitMinor=34 -X $P.gitTreeState=clean"
  LD="$LD -X $C.gitVersion=$V -X $C.gitMajor=1 -X $C.gitMinor=34 -X $C.gitTreeState=clean"
  echo "building the control plane (cold build takes 10-30 minutes on 2 cores)..." >&2
  (cd "$here" && CGO_ENABLED=0 go build -buildvcs=false -trimpath -ldflags "$LD" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
