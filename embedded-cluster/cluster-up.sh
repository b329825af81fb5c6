#!/usr/bin/env bash
# Starts the embedded cluster (control plane, node agents: one, or $NODES, kube-proxy, metrics-server,
# S3 object store, and Kueue's manager when $KUEUE is 1) in the background and waits until it is
# ready. It claims a free bridge and pod range, so clusters of other checkouts keep running. Prints
# one line on ClusterIP routing (on, or off with why and what works instead), one with the object
# store's S3 endpoint (its keys are in ready.json, never printed), then `export KUBECONFIG=...`,
# then the kubeconfig path as its last line.
set -euo pipefail
dir="$1"; py="$2"
ready() {
  cat "$dir/routing.txt" 2>/dev/null || echo "ClusterIP routing: unknown (see $dir/ready.json)"
  cat "$dir/objectstore.txt" 2>/dev/null || true
  echo "export KUBECONFIG=$dir/admin.kubeconfig"; echo "$dir/admin.kubeconfig"
}
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
  echo "cluster already running" >&2
  ready; exit 0
fi
case "${KUEUE:-}" in
  1|true|yes) KUEUE_FLAG=--kueue ;;
  ""|0|false|no) KUEUE_FLAG= ;;
  *) echo "KUEUE=$KUEUE: want 1 (run Kueue's manager) or 0" >&2; exit 2 ;;
esac
mkdir -p "$dir"; rm -f "$dir/ready.json" "$dir/routing.txt" "$dir/objectstore.txt"
setsid "$py" -m minicluster up --dir "$dir" ${NODES:+--nodes "$NODES"} ${KUEUE_FLAG:-} ${CLUSTER_ARGS:-} >"$dir/minicluster.log" 2>&1 &
echo $! > "$dir/pid"
for _ in $(seq 1 1200); do
  [ -f "$dir/ready.json" ] && { ready; exit 0; }
  kill -0 "$(cat "$dir/pid")" 2>/dev/null || { tail -40 "$dir/minicluster.log" >&2; exit 1; }
  sleep 0.5
done
echo "cluster did not become ready; see $dir/minicluster.log" >&2; exit 1
