"""The smallest RBAC that works, run for real: the chart installed in namespaced mode (a Role per
watched namespace, a ClusterRole for the CRD list only), the operator started with exactly that
ServiceAccount's token and `KUBEFORGE_NAMESPACES`, runs a job to success in its namespace and never
touches another. (Cluster-wide mode is what the session operator runs under the base's RBAC.)"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import NAMESPACED_MODE, Cluster, helm, job, wait_condition, wait_for
from minicluster.kubeapi import ApiError
from minicluster.operator_process import OperatorProcess, operator_kubeconfig
from test_helm import CHART, can_i
from test_trainingjob import TJ, command_job, create_job, pods_of

WATCHED, OTHER = NAMESPACED_MODE


@pytest.fixture
def fixed_namespaces(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """The two namespaces the session operator leaves alone (restricted Pod Security, as job namespaces)."""
    for name in NAMESPACED_MODE:
        with contextlib.suppress(ApiError):
            cluster.client.delete(f"/api/v1/namespaces/{name}")
        wait_for(lambda n=name: not any(i["metadata"]["name"] == n  # type: ignore[misc]
                                        for i in cluster.client.get("/api/v1/namespaces")["items"]), 120,
                 what=f"namespace {name} to go")
        cluster.client.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}})
        wait_for(lambda n=name: cluster.client.get(f"/api/v1/namespaces/{n}/serviceaccounts/default"),
                 what="the default ServiceAccount")
    yield WATCHED, OTHER
    for name in NAMESPACED_MODE:
        with contextlib.suppress(ApiError):
            cluster.client.delete(f"/api/v1/namespaces/{name}")


def test_the_operator_in_namespaced_mode_runs_jobs_with_roles_only(
        cluster: Cluster, helm_bin: Path, namespace: str, fixed_namespaces: tuple[str, str],
        tmp_path: Path) -> None:
    release = f"kf-{namespace}"
    helm(helm_bin, "install", release, str(CHART), "-n", namespace, "--set=replicas=0",
         f"--set=watchNamespaces={{{WATCHED}}}", "--wait", kubeconfig=cluster.kubeconfig)
    try:
        assert can_i(cluster, namespace, "create", "pods", WATCHED)
        assert not can_i(cluster, namespace, "create", "pods", OTHER)
        assert not can_i(cluster, namespace, "list", "pods", "")  # no cluster-wide reads either
        kubeconfig = operator_kubeconfig(cluster.kubeconfig, tmp_path / "namespaced.kubeconfig", namespace)
        op = OperatorProcess(kubeconfig, tmp_path / "namespaced-operator.log", {
            "KUBEFORGE_NAMESPACES": json.dumps([WATCHED]), "KUBEFORGE_LOG_FORMAT": "plain"}).start()
        try:
            create_job(cluster, OTHER, command_job("elsewhere", "print('no')", 1))
            create_job(cluster, WATCHED, command_job("mine", "print('hello')", 2))
            obj = wait_condition(cluster, WATCHED, "mine", "Succeeded", 240)
            assert obj["status"]["replicaStatuses"]["node"]["succeeded"] == 2, obj["status"]
            time.sleep(2)
            assert not job(cluster, OTHER, "elsewhere").get("status") and not pods_of(cluster, OTHER, "elsewhere")
            log = op.tail(400)
            assert op.proc is not None and op.proc.poll() is None, log
            assert "403" not in log and "Forbidden" not in log, log
        finally:
            op.stop()
            cluster.client.delete(TJ.format(ns=OTHER) + "/elsewhere")
    finally:
        helm(helm_bin, "uninstall", release, "-n", namespace, "--wait", kubeconfig=cluster.kubeconfig)
