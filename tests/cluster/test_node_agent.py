"""Node-agent robustness: many pods staging one claim path at once, and a container the agent
cannot create reported as `CreateContainerError` (waiting, no exit code) rather than as a failed
program."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, absent, pod_phase, wait_for
from minicluster.kubeapi import Informer

pytestmark = pytest.mark.embedded("self-tests of the embedded cluster's node agent")

Obj = dict[str, Any]
PODS = 12


def test_many_pods_stage_the_same_claim_subpath_at_once(cluster: Cluster, namespace: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
                   "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}},
                  namespace)
    wait_for(lambda: cluster.client.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/shared")
             ["status"].get("phase") == "Bound", what="the claim to bind")
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"w{i}"}, "spec": {
        "restartPolicy": "Never",
        "volumes": [{"name": "runs", "persistentVolumeClaim": {"claimName": "shared"}}],
        "containers": [{"name": "w", "image": "python:3.11",
                        "command": ["sh", "-c", f"echo w{i} > /out/w{i}.txt"],
                        "volumeMounts": [{"name": "runs", "mountPath": "/out", "subPath": "runs/tight/deep"}]}]}}
        for i in range(PODS)]
    reasons: set[str] = set()  # every waiting reason any pod ever reported

    def seen(_etype: str, pod: Obj) -> None:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            reasons.add(cs.get("state", {}).get("waiting", {}).get("reason", ""))

    watch = Informer(cluster.client, f"/api/v1/namespaces/{namespace}/pods", seen).start()
    watch.synced.wait(10)
    cluster.apply(pods, namespace)  # one request: the agent sees them all at once
    try:
        wait_for(lambda: all(pod_phase(cluster, namespace, f"w{i}") in ("Succeeded", "Failed")
                             for i in range(PODS)), timeout=120, what="all pods to finish")
    finally:
        watch.stopped.set()
    assert "CreateContainerError" not in reasons, "staging the shared claim path raced"
    phases = {f"w{i}": pod_phase(cluster, namespace, f"w{i}") for i in range(PODS)}
    assert set(phases.values()) == {"Succeeded"}, phases
    pvc = cluster.client.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/shared")
    pv = cluster.client.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    out = Path(pv["spec"]["hostPath"]["path"]) / "runs" / "tight" / "deep"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"w{i}.txt" for i in range(PODS))


def test_a_container_the_agent_cannot_create_waits_with_create_container_error(
        cluster: Cluster, namespace: str) -> None:
    # A hostPath the agent cannot create (its parent is a file): a node-side failure, not the program's.
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "blocked"}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "v", "hostPath": {"path": "/etc/hostname/sub", "type": "DirectoryOrCreate"}}],
        "containers": [{"name": "main", "image": "python:3.11", "command": ["true"],
                        "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}}, namespace)
    path = f"/api/v1/namespaces/{namespace}/pods/blocked"

    def waiting() -> Obj | None:
        st = cluster.client.get(path)["status"]
        cs = (st.get("containerStatuses") or [{}])[0]
        return st if cs.get("state", {}).get("waiting", {}).get("reason") == "CreateContainerError" else None

    st = wait_for(waiting, timeout=60, what="CreateContainerError")
    assert st["phase"] == "Pending" and "reason" not in st, st
    cs = st["containerStatuses"][0]
    assert cs["name"] == "main" and "terminated" not in cs["lastState"], cs
    assert "NotADirectoryError" in cs["state"]["waiting"]["message"], cs
    cluster.client.delete(path)
    wait_for(lambda: absent(cluster, path), timeout=30, what="the blocked pod to be deleted")
