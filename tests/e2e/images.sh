#!/usr/bin/env bash
# `make images`: build the operator, trainer (CPU variant) and dashboard images with podman and start each
# once. Opt-in (slow: the trainer image installs PyTorch), never part of `make test`. Registries of base
# images may be unreachable, so the base the Dockerfiles name (python:3.11-slim) is made locally from
# Debian's packages with debootstrap (Debian 12 ships Python 3.11) unless it exists already. podman runs
# as root with the runc runtime, host networking for build steps, and ulimits below the host's hard limits.
# Where a tool is missing or not root, it says in one line why it skips and exits non-zero.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version=0.1.0
images="${IMAGES:-operator trainer dashboard}"

for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || { echo "images: skipped: '$tool' is not installed on this machine"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "images: skipped: podman builds here run as root"; exit 1; }

limit=$(( $(ulimit -Hn) / 2 )); [ "$limit" -gt 65536 ] && limit=65536
ulimits=(--ulimit "nofile=$limit:$limit" --ulimit "nproc=4096:4096")
# Build steps trust what this machine trusts (e.g. a TLS-inspecting proxy's CA); nothing of it stays in an image.
trust=(--volume /etc/ssl/certs:/etc/ssl/certs:ro)
pod() { podman --runtime runc --cgroup-manager cgroupfs "$@"; }

base=python:3.11-slim
if ! pod image exists "$base"; then
  echo "images: making $base from Debian packages (debootstrap)"
  rootfs="$(mktemp -d)"; trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | pod import --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' --change 'CMD ["python"]' - "$base"
fi

cd "$root"
declare -A dockerfile=([operator]=operator/Dockerfile [trainer]=trainer_image/Dockerfile [dashboard]=dashboard/Dockerfile)
declare -A check=(
  [operator]="--entrypoint python kubeforge/operator:$version -c 'import kubeforge_operator.main'"
  [trainer]="--entrypoint python kubeforge/trainer:$version -c 'import torch, kubeforge_trainer, kubeforge_server'"
  [dashboard]="--entrypoint python kubeforge/dashboard:$version -m streamlit version"
)
for image in $images; do
  start=$SECONDS
  pod build -q --network host "${ulimits[@]}" "${trust[@]}" --build-arg VARIANT=cpu -f "${dockerfile[$image]}" \
    -t "kubeforge/$image:$version" . >/dev/null
  eval pod run --rm --network none "${ulimits[@]}" "${check[$image]}" >/dev/null
  echo "images: kubeforge/$image:$version built and started ($(( SECONDS - start )) s)"
done
