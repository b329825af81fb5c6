#!/usr/bin/env bash
# Builds SeaweedFS's `weed` binary (the embedded cluster's S3-compatible object store) from its Go
# module once and caches it outside the work tree, keyed by the pinned version and the build
# flags. The build happens in a throwaway module (`go get` of the pinned version's weed package,
# then `go build` of it), so its dependency versions are the ones SeaweedFS itself requires.
# Prints the binary's path as its last line. One build at a time: a second caller waits for the
# first and reuses its binary. A cold build takes about six minutes on 2 cores (downloads
# included); the binary is about 160 MB.
set -euo pipefail
module=github.com/seaweedfs/seaweedfs
version=v0.0.0-20261109003541-7506e5f91cd6
ldflags="-s -w"
cache="${KUBEFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubeforge}"
key="$(printf '%s@%s %s\n' "$module" "$version" "$ldflags" | sha256sum | cut -c1-16)"
dir="$cache/seaweedfs-$key"
bin="$dir/weed"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/.build-seaweedfs.lock"; flock 9
fi
if [ ! -x "$bin" ]; then
  tmp="$(mktemp -d "$cache/seaweedfs-build.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  echo "building seaweedfs $version (a cold build takes about six minutes on 2 cores)..." >&2
  (
    cd "$tmp"
    export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
    go mod init kubeforge.local/seaweedfs-build >/dev/null 2>&1
    go get "$module/weed@$version" 2>get.log || { cat get.log >&2; exit 1; }
    go build -trimpath -ldflags "$ldflags" -o "$tmp/weed" "$module/weed"
  )
  mkdir -p "$dir"
  mv "$tmp/weed" "$bin.tmp"
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
