#!/usr/bin/env bash
# Stops the embedded cluster started by cluster-up.sh and removes its state; the cluster removes
# only the bridge, namespaces, cgroups and nft tables it created itself. Its state includes the
# PersistentVolumes' directories (trained models, checkpoints): the script names them before it
# deletes them, and KEEP_VOLUMES=1 keeps them in place (under DIR/node/volumes, each with a
# `<volume>.claim` file naming its claim) and deletes everything else. The same goes for the S3
# object store's data (buckets and objects, under DIR/objectstore): named after the volumes, kept
# with KEEP_VOLUMES=1 (the next cluster serves it again, under new keys).
set -euo pipefail
dir="$1"
vols="$dir/node/volumes"
store="$dir/objectstore"
claims=""; count=0
if [ -d "$vols" ]; then
  for f in "$vols"/*.claim; do
    [ -f "$f" ] || continue
    count=$((count + 1)); claims="$claims${claims:+, }$(cat "$f")"
  done
fi
if [ "$count" -gt 0 ]; then
  size="$(du -sh "$vols" 2>/dev/null | cut -f1)"
  if [ "${KEEP_VOLUMES:-0}" = "1" ]; then
    echo "keeping $count volume(s) ($size; claims $claims) in $vols"
  else
    echo "deleting $count volume(s) ($size: trained models, checkpoints; claims $claims); KEEP_VOLUMES=1 keeps them"
  fi
fi
stored=0
if [ -d "$store" ]; then
  stored=1; size="$(du -sh "$store" 2>/dev/null | cut -f1)"
  if [ "${KEEP_VOLUMES:-0}" = "1" ]; then
    echo "keeping the object store's data ($size) in $store"
  else
    echo "deleting the object store's data ($size: buckets and objects); KEEP_VOLUMES=1 keeps it"
  fi
fi
if [ -f "$dir/pid" ]; then
  pid="$(cat "$dir/pid")"
  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "-$pid" 2>/dev/null || true
fi
if [ "${KEEP_VOLUMES:-0}" = "1" ] && [ $((count + stored)) -gt 0 ]; then
  find "$dir" -mindepth 1 -maxdepth 1 ! -name node ! -name objectstore -exec rm -rf {} +
  if [ "$count" -gt 0 ]; then
    find "$dir/node" -mindepth 1 -maxdepth 1 ! -name volumes -exec rm -rf {} +
  else
    rm -rf "$dir/node"
  fi
else
  rm -rf "$dir"
fi
echo "cluster stopped"
