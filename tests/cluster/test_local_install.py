"""One install story: `make operator-up` then `make operator-down` leaves nothing but the CRDs, so a
Helm install follows cleanly; and operator-up refuses, in one line, to start a second operator
where a Helm release or a running replica (renewing the operator Lease) already acts. On a cluster
of its own: operator-down deletes the operator's namespace, which the session cluster's tests use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import REPO, helm, wait_for
from minicluster.launch import RunningCluster, start_cluster

pytestmark = [pytest.mark.own_clusters, pytest.mark.embedded("starts a cluster of its own")]
CHART = REPO / "manifests" / "chart" / "kubeforge"


def local(cluster: RunningCluster, cmd: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run([sys.executable, "-m", "minicluster", cmd, "--dir", str(root)], env=env,
                          capture_output=True, text=True, timeout=300)


def kubectl(cluster: RunningCluster, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(["kubectl", f"--kubeconfig={cluster.kubeconfig}", *args], input=stdin,
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


def kubeforge_objects(cluster: RunningCluster) -> list[str]:
    kinds = "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings"
    return kubectl(cluster, "get", kinds, "-l", "app.kubernetes.io/part-of=kubeforge", "-o", "name").split()


def test_operator_up_down_then_helm_and_no_second_operator(helm_bin: Path, tmp_path: Path) -> None:
    cluster = start_cluster(extra=("--no-metrics-server", "--no-kube-proxy"))
    root = tmp_path / "operator"
    try:
        assert local(cluster, "operator-up", root).returncode == 0
        assert kubeforge_objects(cluster)
        down = local(cluster, "operator-down", root)
        assert down.returncode == 0 and "the CRDs and the jobs stay" in down.stdout, down
        assert not kubeforge_objects(cluster)
        wait_for(lambda: "kubeforge-system" not in kubectl(cluster, "get", "ns", "-o", "name"), 120,
                 what="the operator's namespace to go")
        assert kubectl(cluster, "get", "crd", "trainingjobs.kubeforge.dev", "-o", "name")

        helm(helm_bin, "install", "kf", str(CHART), "-n", "kubeforge-system", "--create-namespace",
             "--set=replicas=0", "--wait", kubeconfig=cluster.kubeconfig)
        refused = local(cluster, "operator-up", root)
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused
        assert "installed here by Helm (release kf in namespace kubeforge-system)" in refused.stderr
        helm(helm_bin, "uninstall", "kf", "-n", "kubeforge-system", "--wait", kubeconfig=cluster.kubeconfig)
        assert not kubeforge_objects(cluster)  # nothing but the CRDs

        renewed = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "kubeforge-operator", "namespace": "default"},
                 "spec": {"holderIdentity": "kubeforge-operator-7f9c", "leaseDurationSeconds": 15,
                          "renewTime": renewed}}
        kubectl(cluster, "apply", "-f", "-", stdin=json.dumps(lease))
        refused = local(cluster, "operator-up", root)
        assert refused.returncode == 1 and "another Kubeforge operator is running here: kubeforge-operator-7f9c" \
            in refused.stderr, refused
    finally:
        local(cluster, "operator-down", root)
        cluster.stop()
