"""The `kueue` fixture runs Kueue's real manager: a Workload created directly in a LocalQueue is
admitted within its ClusterQueue's quota, one beyond the quota waits with Kueue's reason, and gets
admitted once the first is deleted."""

from __future__ import annotations

import time
from typing import Any

from conftest import KueueHarness, Queues, condition

Obj = dict[str, Any]


def workload(harness: KueueHarness, q: Queues, name: str, cpu: str) -> Obj:
    """A Workload of one pod set (one pod asking for `cpu`) in `q`'s LocalQueue."""
    container = {"name": "main", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}
    return {"apiVersion": harness.api_version, "kind": "Workload", "metadata": {"name": name},
            "spec": {"queueName": q.local_queue, "podSets": [
                {"name": "main", "count": 1, "template": {"spec": {"restartPolicy": "Never",
                                                                  "containers": [container]}}}]}}


def test_workloads_are_admitted_within_quota_and_wait_beyond_it(kueue: KueueHarness, namespace: str) -> None:
    q = kueue.queues(namespace, cpu="1", memory="1Gi")
    client = kueue.cluster.client
    t0 = time.monotonic()
    client.create(kueue.path("workloads", namespace), workload(kueue, q, "first", "600m"))
    first = kueue.wait_admitted(namespace, "first")
    print(f"\nKueue: Workload create -> Admitted in {time.monotonic() - t0:.2f} s")
    assert (condition(first, "QuotaReserved") or {}).get("status") == "True"
    admission = first["status"]["admission"]
    assert admission["clusterQueue"] == q.cluster_queue
    assert admission["podSetAssignments"][0]["flavors"]["cpu"] == q.flavor

    client.create(kueue.path("workloads", namespace), workload(kueue, q, "second", "600m"))
    pending = kueue.wait_pending(namespace, "second")
    assert pending["reason"] == "Pending", pending
    assert "insufficient unused quota for cpu" in pending["message"], pending
    assert not kueue.workload(namespace, "second").get("status", {}).get("admission")

    client.delete(kueue.path("workloads", namespace, "first"))
    second = kueue.wait_admitted(namespace, "second")
    assert second["status"]["admission"]["clusterQueue"] == q.cluster_queue
