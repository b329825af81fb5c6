#!/usr/bin/env bash
# `make kind-up` / `make kind-e2e`: a kind cluster (manifests/overlays/kind/cluster.yaml) with the images
# built here and side-loaded, Kubeforge installed by helm, then (e2e) the cluster test tier run against
# it with `--kubeconfig`. Needs Docker and kind: where either is missing it says so in one line and fails.
set -euo pipefail
action="$1"; py="${2:-python3}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
name="${KIND_CLUSTER_NAME:-kubeforge}"
kubeconfig="$root/.cluster/kind/kubeconfig"
version=0.1.0

for tool in docker kind; do
  command -v "$tool" >/dev/null 2>&1 || { echo "kind: not run: '$tool' is not installed on this machine"; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "kind: not run: the Docker engine does not answer"; exit 1; }

mkdir -p "$(dirname "$kubeconfig")"
if ! kind get clusters 2>/dev/null | grep -qx "$name"; then
  kind create cluster --name "$name" --config "$root/manifests/overlays/kind/cluster.yaml" --kubeconfig "$kubeconfig"
fi
kind get kubeconfig --name "$name" > "$kubeconfig"

cd "$root"
for image in operator:operator/Dockerfile trainer:trainer_image/Dockerfile dashboard:dashboard/Dockerfile; do
  docker build -q -f "${image#*:}" -t "kubeforge/${image%%:*}:$version" .
  kind load docker-image --name "$name" "kubeforge/${image%%:*}:$version"
done

helm="$(embedded-cluster/build-helm.sh | tail -1)"
kubectl --kubeconfig "$kubeconfig" create namespace kubeforge-system --dry-run=client -o yaml |
  kubectl --kubeconfig "$kubeconfig" apply -f -
kubectl --kubeconfig "$kubeconfig" label --overwrite namespace kubeforge-system \
  pod-security.kubernetes.io/enforce=restricted
"$helm" upgrade --install kubeforge manifests/chart/kubeforge --kubeconfig "$kubeconfig" -n kubeforge-system \
  --set image.pullPolicy=Never --set dashboard.enabled=true --set dashboard.image.pullPolicy=Never \
  --set replicas=2 --wait --timeout 300s
echo "kind cluster '$name' ready with Kubeforge installed: export KUBECONFIG=$kubeconfig"

if [ "$action" = e2e ]; then
  "$py" -m pytest -q -ra tests/cluster --kubeconfig "$kubeconfig"
fi
