"""The `kueue` fixture runs Kueue's real manager: a Workload created directly in a LocalQueue is
admitted within its ClusterQueue's quota, one beyond the quota waits with Kueue's reason, and gets
admitted once the first is deleted."""

from __future__ import annotations

import time
from typing import Any

from conftest import KueueHarness, Queues, condition, wait_for

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


def test_a_cluster_queue_borrows_its_cohorts_unused_quota(kueue: KueueHarness, namespace: str) -> None:
    cohort = f"kf-cohort-{namespace}"
    lender = kueue.queues(namespace, cpu="1", memory="1Gi", cohort=cohort)
    borrower = kueue.queues(namespace, cpu="1", memory="1Gi", cohort=cohort, flavor=lender.flavor,
                            preemption={"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority"})
    cq = kueue.cluster.client.get(kueue.path("clusterqueues", name=borrower.cluster_queue))
    assert cq["spec"]["cohortName"] == cohort and cq["spec"]["preemption"]["reclaimWithinCohort"] == "Any"
    kueue.cluster.client.create(kueue.path("workloads", namespace), workload(kueue, borrower, "big", "1500m"))
    admission = kueue.wait_admitted(namespace, "big")["status"]["admission"]
    assert admission["clusterQueue"] == borrower.cluster_queue  # 1.5 CPUs: 1 its own, 0.5 of the lender's

    def borrowed_cpu() -> str | None:
        cq = kueue.cluster.client.get(kueue.path("clusterqueues", name=borrower.cluster_queue))
        usage = cq.get("status", {}).get("flavorsReservation") or [{"resources": []}]
        cpu = next((r for r in usage[0]["resources"] if r["name"] == "cpu"), {})
        return cpu.get("borrowed") if cpu.get("total") == "1500m" else None
    assert wait_for(borrowed_cpu, timeout=10, what="the borrower's reservation") == "500m"
