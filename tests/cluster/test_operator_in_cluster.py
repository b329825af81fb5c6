"""The operator as a pod: `helm install` runs the chart's Deployment in the embedded cluster (the node
agent runs the operator image as `python -m kubeforge_operator`). The operator logs in with its projected
ServiceAccount token and reaches the API server where the node agent tells every pod to
(`KUBERNETES_SERVICE_HOST`: the `kubernetes` Service's ClusterIP where this cluster runs kube-proxy, else
the API server's own address on the pod bridge). Sample jobs go to a namespace the session's local operator
leaves alone, so only the installed operator can make them succeed."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO, Cluster, helm, pod_logs, wait_condition, wait_for
from minicluster.kubeapi import ApiError

CHART = REPO / "manifests" / "chart" / "kubeforge"
SAMPLE = REPO / "manifests" / "samples" / "trainingjob-env-check.yaml"
OPERATOR_LABELS = "app.kubernetes.io/name=kubeforge-operator"


@contextlib.contextmanager
def release(cluster: Cluster, helm_bin: Path, watch: str, replicas: int) -> Iterator[str]:
    """The chart installed into a fresh namespace (Pod Security `restricted`) with `replicas` operator pods
    watching namespace `watch`; yields the release namespace; uninstalls on exit."""
    ns = f"kfop-{uuid.uuid4().hex[:8]}"
    cluster.client.create("/api/v1/namespaces", {"metadata": {
        "name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    try:
        helm(helm_bin, "install", ns, str(CHART), "-n", ns, f"--set=replicas={replicas}",
             f"--set=watchNamespaces={{{watch}}}", "--set=restartBackoffSeconds=1", "--wait", "--timeout=180s",
             kubeconfig=cluster.kubeconfig)
        yield ns
    finally:
        helm(helm_bin, "uninstall", ns, "-n", ns, "--wait", kubeconfig=cluster.kubeconfig, check=False)
        with contextlib.suppress(ApiError):
            cluster.client.delete(f"/api/v1/namespaces/{ns}")


def running_operators(cluster: Cluster, ns: str) -> list[str]:
    """Names of the operator pods that run and are not being deleted."""
    pods = cluster.client.request("GET", f"/api/v1/namespaces/{ns}/pods", query={"labelSelector": OPERATOR_LABELS})
    return sorted(p["metadata"]["name"] for p in pods["items"]
                  if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))


def test_helm_installed_operator_runs_a_sample_job(cluster: Cluster, helm_bin: Path, free_namespace: str) -> None:
    with release(cluster, helm_bin, free_namespace, replicas=1) as ns:
        [pod] = wait_for(lambda: running_operators(cluster, ns), 60, what="the operator pod")
        cluster.apply(SAMPLE, free_namespace)
        wait_condition(cluster, free_namespace, "env-check", "Succeeded", timeout=180)
        logs = pod_logs(cluster, ns, pod)
        assert "Activity 'login' succeeded" in logs, logs[-2000:]
