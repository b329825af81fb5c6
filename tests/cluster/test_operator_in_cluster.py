"""The operator as a pod: `helm install` runs the chart's Deployment in the embedded cluster (the node
agent runs the operator image as `python -m kubeforge_operator`). The operator logs in with its projected
ServiceAccount token and reaches the API server where the node agent tells every pod to
(`KUBERNETES_SERVICE_HOST`: the `kubernetes` Service's ClusterIP where this cluster runs kube-proxy, else
the API server's own address on the pod bridge). Sample jobs go to a namespace the session's local operator
leaves alone, so only the installed operator can make them succeed. Of two replicas, only the holder of the
Lease acts; when its pod goes, the other takes over. `kubectl apply -k` of the kustomize base (with an
overlay that narrows the watch to one namespace) runs the same operator and the dashboard."""

from __future__ import annotations

import contextlib
import os
import signal
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, Cluster, helm, pod_logs, wait_condition, wait_for
from minicluster.kubeapi import ApiError, Informer

pytestmark = pytest.mark.embedded("installs operators beside the session's own (which leaves them alone only here)")

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


def lease_holder(cluster: Cluster, ns: str) -> str:
    lease = cluster.client.get(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/kubeforge-operator")
    return str(lease["spec"].get("holderIdentity") or "")


def object_writes(cluster: Cluster, ns: str, pod: str) -> list[str]:
    """The operator pod's counts of API writes other than to its Lease (its Prometheus metrics)."""
    ip = cluster.client.get(f"/api/v1/namespaces/{ns}/pods/{pod}")["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=10) as r:
        text = r.read().decode()
    return [line for line in text.splitlines()
            if line.startswith("kubeforge_api_writes_total{") and 'kind="leases"' not in line]


def run_sample(cluster: Cluster, ns: str, name: str) -> None:
    job: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    job["metadata"]["name"] = name
    cluster.apply(job, ns)
    wait_condition(cluster, ns, name, "Succeeded", timeout=180)


@dataclass
class Pair:
    """Two operator replicas of one release: which holds the Lease, and every pod made in the watched
    namespace (name -> uids: a pod made twice, by two leaders or after a delete, has two)."""

    ns: str
    leader: str
    standby: str
    created: defaultdict[str, set[str]]

    def made_once(self, jobs: tuple[str, ...]) -> bool:
        expected = {f"{job}-node-{rank}" for job in jobs for rank in range(3)}
        return set(self.created) == expected and all(len(uids) == 1 for uids in self.created.values())


@contextlib.contextmanager
def two_replicas(cluster: Cluster, helm_bin: Path, watch: str) -> Iterator[Pair]:
    created: defaultdict[str, set[str]] = defaultdict(set)
    pods = Informer(cluster.client, f"/api/v1/namespaces/{watch}/pods",
                    lambda _, pod: created[pod["metadata"]["name"]].add(pod["metadata"]["uid"])).start()
    try:
        with release(cluster, helm_bin, watch, replicas=2) as ns:
            replicas = wait_for(lambda: len(running_operators(cluster, ns)) == 2 and running_operators(cluster, ns),
                                90, what="two operator pods")
            leader = wait_for(lambda: lease_holder(cluster, ns) in replicas and lease_holder(cluster, ns), 60,
                              what="a leader")
            [standby] = set(replicas) - {leader}
            yield Pair(ns, leader, standby, created)
    finally:
        pods.stop()


def test_of_two_replicas_one_acts_and_the_other_takes_over(cluster: Cluster, helm_bin: Path,
                                                          free_namespace: str) -> None:
    with two_replicas(cluster, helm_bin, free_namespace) as pair:
        ns = pair.ns
        run_sample(cluster, free_namespace, "before")
        assert object_writes(cluster, ns, pair.leader) and not object_writes(cluster, ns, pair.standby)
        cluster.kubectl("delete", "pod", pair.leader, "-n", ns, "--wait=false")
        successor = wait_for(lambda: lease_holder(cluster, ns) not in ("", pair.leader) and lease_holder(cluster, ns),
                             60, what="another leader")
        run_sample(cluster, free_namespace, "after")
    # The standby or the pod that replaced the leader, whichever asked first after the Lease was released.
    assert successor != pair.leader, (successor, pair.leader)
    assert pair.made_once(("before", "after")), pair.created


def restarts(cluster: Cluster, ns: str, pod: str) -> int:
    statuses = cluster.client.get(f"/api/v1/namespaces/{ns}/pods/{pod}")["status"].get("containerStatuses", [])
    return sum(int(c.get("restartCount", 0)) for c in statuses)


def container_pid(cluster: Cluster, ns: str, pod: str) -> int:
    """The pod's process on this machine (the node agent runs a container as a process group of its own)."""
    status = cluster.client.get(f"/api/v1/namespaces/{ns}/pods/{pod}")["status"]
    return int(status["containerStatuses"][0]["containerID"].split("://", 1)[1])


def test_a_frozen_leader_loses_the_lease_and_steps_down_when_it_wakes(cluster: Cluster, helm_bin: Path,
                                                                      free_namespace: str) -> None:
    """A leader that stops answering (SIGSTOP: a hung process or a partition) keeps no lock: its Lease
    expires and the standby takes over; woken, the old leader must not act as a second leader."""
    with two_replicas(cluster, helm_bin, free_namespace) as pair:
        pid = container_pid(cluster, pair.ns, pair.leader)
        os.killpg(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: lease_holder(cluster, pair.ns) == pair.standby, 45, what="the standby to take the Lease")
            run_sample(cluster, free_namespace, "frozen")
        finally:
            os.killpg(pid, signal.SIGCONT)
        wait_for(lambda: restarts(cluster, pair.ns, pair.leader) >= 1, 60,
                 what="the woken leader to step down (it exits and starts again as a candidate)")
        run_sample(cluster, free_namespace, "woken")
        assert lease_holder(cluster, pair.ns) == pair.standby
    assert pair.made_once(("frozen", "woken")), pair.created


def test_kustomize_installed_operator_runs_a_sample_job(cluster: Cluster, free_namespace: str,
                                                         tmp_path: Path) -> None:
    """`kubectl apply -k` as a user would, through an overlay of the base that watches one namespace."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(REPO / "manifests" / "base", tmp_path)],  # kustomize wants it relative
        "components": [os.path.relpath(REPO / "manifests" / "components" / "dashboard", tmp_path)],  # opt-in
        "patches": [{"target": {"kind": "Deployment", "name": "kubeforge-operator"}, "patch": yaml.safe_dump([
            {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
             "value": {"name": "KUBEFORGE_NAMESPACES", "value": f'["{free_namespace}"]'}}])}]}))
    system = "kubeforge-system"
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(tmp_path))
        for deployment in ("kubeforge-operator", "kubeforge-dashboard"):
            cluster.kubectl("wait", "-n", system, "--for=condition=Available", f"deployment/{deployment}",
                            "--timeout=180s")
        run_sample(cluster, free_namespace, "kustomized")
        pods = cluster.client.request("GET", f"/api/v1/namespaces/{system}/pods")["items"]
        counts = {p["metadata"]["name"]: restarts(cluster, system, p["metadata"]["name"]) for p in pods}
        assert set(counts.values()) == {0}, counts  # their probes (on named ports) pass
    finally:  # the rest (CRDs, namespace, RBAC) is what the session's own operator runs under
        cluster.kubectl("delete", "-n", system, "deployment/kubeforge-operator", "deployment/kubeforge-dashboard",
                        "service/kubeforge-dashboard", "networkpolicy/kubeforge-dashboard", "--ignore-not-found",
                        "--wait=true", check=False)
