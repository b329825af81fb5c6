#!/usr/bin/env bash
# Stops the embedded cluster started by cluster-up.sh and removes its state; the cluster removes
# only the bridge, namespaces, cgroups and nft tables it created itself.
set -euo pipefail
dir="$1"
if [ -f "$dir/pid" ]; then
  pid="$(cat "$dir/pid")"
  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "-$pid" 2>/dev/null || true
fi
rm -rf "$dir"
echo "cluster stopped"
