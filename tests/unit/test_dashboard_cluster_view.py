"""The cluster page's node and Kueue view models, from the JSON the API server sends: a lost node reads
NotReady since its transition with its unreachable taint apart from the others, each node names the
jobs' ranks and tracks placed on it, a ClusterQueue's usage stands against its nominal quota per
flavor and resource (v1beta2 and v1beta1 alike), and every table stays bounded and says what it left out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubeforge_api.constants import LABEL_JOB, LABEL_RANK, LABEL_ROLE, LABEL_SERVING, LABEL_TRACK, ROLE_NODE
from kubeforge_dashboard.kubeobjects import cluster_queue_info, local_queue_info, node_info
from kubeforge_dashboard.memory import MemorySource
from kubeforge_dashboard.scope import ScopedSource
from kubeforge_dashboard.source import (
    ClusterQueueInfo,
    LocalQueueInfo,
    NodeInfo,
    PodInfo,
    Queues,
    QuotaUse,
    Resources,
    Taint,
)
from kubeforge_dashboard.views import nodes, queues

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
GIB = 2**30


def node_json(name: str, ready: str = "True", since: str = "2026-12-06T10:00:00Z", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": spec,
            "status": {"capacity": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                       "allocatable": {"cpu": "3500m", "memory": "15Gi", "nvidia.com/gpu": "1"},
                       "conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": ready, "lastTransitionTime": since,
                                       "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown"}]}}


LOST = node_json("kf-node-b", "Unknown", "2026-12-06T11:58:30Z", unschedulable=True, taints=[
    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-12-06T11:58:35Z"},
    {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
    {"key": "gpu", "value": "a100", "effect": "NoSchedule"}])


def pod(name: str, node: str, phase: str = "Running", **labels: str) -> PodInfo:
    return PodInfo(namespace="ml", name=name, node=node, phase=phase, labels=labels)


def worker(job: str, rank: int, node: str, phase: str = "Running") -> PodInfo:
    return pod(f"{job}-node-{rank}", node, phase, **{LABEL_JOB: job, LABEL_ROLE: ROLE_NODE, LABEL_RANK: str(rank)})


def server(job: str, i: int, node: str, track: str = "main") -> PodInfo:
    return pod(f"{job}-{track}-{i}", node, **{LABEL_SERVING: job, LABEL_TRACK: track})


def test_a_node_json_reads_as_ready_since_with_its_taints_and_resources() -> None:
    lost = node_info(LOST)
    assert (lost.ready, lost.ready_status, lost.ready_since, lost.ready_reason, lost.unschedulable) == (
        False, "Unknown", "2026-12-06T11:58:30Z", "NodeStatusUnknown", True)
    assert lost.taints[0] == Taint("node.kubernetes.io/unreachable", "NoExecute", "", "2026-12-06T11:58:35Z")
    assert lost.taints[2] == Taint("gpu", "NoSchedule", "a100")
    assert lost.capacity == Resources(4000, 16 * GIB, 1) and lost.allocatable == Resources(3500, 15 * GIB, 1)
    bare = node_info({"metadata": {"name": "new"}})  # no status yet: NotReady, nothing known
    assert (bare.ready, bare.ready_status, bare.taints, bare.capacity) == (False, "", (), Resources())


def test_node_table_puts_lost_nodes_first_with_since_and_their_taints_apart() -> None:
    table = nodes.node_table([node_info(node_json("kf-node-a")), node_info(LOST)], [], NOW)
    first, second = table.rows
    assert (first["node"], first["status"], first["since"], first["reason"]) == (
        "kf-node-b", "🔴 NotReady, cordoned", "1m 30s ago", "NodeStatusUnknown")
    assert first["node-loss taints"] == ("node.kubernetes.io/unreachable:NoExecute (1m 25s ago); "
                                         "node.kubernetes.io/unreachable:NoSchedule")
    assert first["other taints"] == "gpu=a100:NoSchedule"
    assert (second["node"], second["status"], second["since"], second["node-loss taints"]) == (
        "kf-node-a", "🟢 Ready", "2h 0m ago", "")
    assert (second["cpu capacity"], second["cpu allocatable"]) == ("4", "3.5")
    assert (second["memory capacity"], second["memory allocatable"]) == ("16.0 GiB", "15.0 GiB")
    assert table.left_out == 0
    assert nodes.not_ready([node_info(node_json("kf-node-a")), node_info(LOST)], NOW) == (
        "1 of 2 nodes NotReady: kf-node-b (since 1m 30s ago)")
    assert nodes.not_ready([node_info(node_json("kf-node-a"))], NOW) is None


def test_each_node_names_the_jobs_ranks_and_tracks_placed_on_it() -> None:
    a, b = NodeInfo("a", True, Resources(), Resources()), NodeInfo("b", True, Resources(), Resources())
    pods = [worker("bert", 10, "a"), worker("bert", 2, "a"), worker("bert", 0, "b"),
            worker("bert", 3, "a", phase="Succeeded"),  # finished: holds nothing, not shown
            pod("bert-compress", "a", **{LABEL_JOB: "bert", LABEL_ROLE: "compress"}),
            server("chat", 0, "a"), server("chat", 1, "a"), server("chat", 0, "b", "canary"),
            pod("unrelated", "a"), worker("pending", 0, "")]  # not Kubeforge's / not scheduled
    rows = {r["node"]: r for r in nodes.node_table([a, b], pods, NOW).rows}
    assert rows["a"]["jobs here"] == "ServingJob ml/chat: main x2; TrainingJob ml/bert: rank 2, rank 10, compress"
    assert rows["b"]["jobs here"] == "ServingJob ml/chat: canary; TrainingJob ml/bert: rank 0"
    assert (rows["a"]["kubeforge pods"], rows["b"]["kubeforge pods"]) == (5, 2)


def test_node_table_is_bounded_and_says_what_it_left_out() -> None:
    many = [NodeInfo(f"n{i:04}", i % 50 != 7, Resources(), Resources()) for i in range(1000)]
    table = nodes.node_table(many, [], NOW)
    assert (len(table.rows), table.left_out) == (nodes.MAX_NODES, 900)
    assert [r["node"] for r in table.rows[:20]] == [f"n{i:04}" for i in range(7, 1000, 50)]  # NotReady ones first
    crowded = nodes.jobs_on([worker("big", i, "a") for i in range(40)])
    assert crowded.endswith("rank 11; +28 more pods") and crowded.count("rank") == nodes.MAX_PODS_PER_NODE
    eight = tuple(Taint(f"k{i}", "NoSchedule") for i in range(8))
    tainted = NodeInfo("t", True, Resources(), Resources(), taints=eight)
    assert nodes.taints(tainted, NOW)[1].endswith("k4:NoSchedule; +3 more taints")
    assert nodes.not_ready(many, NOW) == "20 of 1000 nodes NotReady: n0007, n0057, n0107, n0157, n0207 and 15 more"


def cluster_queue_json(name: str, version: str = "v1beta2", pending: int = 1, admitted: int = 2) -> dict[str, Any]:
    cohort = {"cohortName": "research"} if version == "v1beta2" else {"cohort": "research"}
    return {"apiVersion": f"kueue.x-k8s.io/{version}", "kind": "ClusterQueue", "metadata": {"name": name},
            "spec": {**cohort, "namespaceSelector": {}, "resourceGroups": [
                {"coveredResources": ["cpu", "memory"], "flavors": [
                    {"name": "default", "resources": [{"name": "cpu", "nominalQuota": "4"},
                                                      {"name": "memory", "nominalQuota": "8Gi"}]}]},
                {"coveredResources": ["nvidia.com/gpu"], "flavors": [
                    {"name": "a100", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 2}]}]}]},
            "status": {"pendingWorkloads": pending, "reservingWorkloads": admitted, "admittedWorkloads": admitted,
                       "conditions": [{"type": "Active", "status": "True", "reason": "Ready"}],
                       "flavorsReservation": [
                           {"name": "default", "resources": [{"name": "cpu", "total": "5", "borrowed": "1"},
                                                             {"name": "memory", "total": "2Gi", "borrowed": "0"}]},
                           {"name": "a100", "resources": [{"name": "nvidia.com/gpu", "total": "0"}]}],
                       "flavorsUsage": [
                           {"name": "default", "resources": [{"name": "cpu", "total": "3500m", "borrowed": "0"},
                                                             {"name": "memory", "total": "1Gi"},
                                                             {"name": "pods", "total": "3"}]}]}}


def test_a_cluster_queue_reads_usage_against_nominal_quota_per_flavor_and_resource() -> None:
    for version in ("v1beta2", "v1beta1"):
        cq = cluster_queue_info(cluster_queue_json("team-a", version))
        assert (cq.name, cq.cohort, cq.pending, cq.reserving, cq.admitted, cq.active) == (
            "team-a", "research", 1, 2, 2, "True")
    assert cq.quotas == (QuotaUse("default", "cpu", 4.0, 5.0, 3.5, 1.0),
                         QuotaUse("default", "memory", 8.0 * GIB, 2.0 * GIB, 1.0 * GIB, 0.0),
                         QuotaUse("a100", "nvidia.com/gpu", 2.0, 0.0, 0.0, 0.0),
                         QuotaUse("default", "pods", 0.0, 0.0, 3.0, 0.0))  # in use, but no quota in the spec
    rows = queues.quota_rows([cq]).rows
    assert rows[0] == {"cluster queue": "team-a", "flavor": "default", "resource": "cpu", "nominal quota": "4",
                       "reserved": "5", "in use (admitted)": "3.5", "borrowed": "1", "reserved of quota": 1.0}
    assert (rows[1]["nominal quota"], rows[1]["reserved"], rows[1]["reserved of quota"]) == ("8.0 GiB", "2.0 GiB", 0.25)
    assert (rows[2]["resource"], rows[2]["nominal quota"], rows[2]["reserved of quota"]) == ("nvidia.com/gpu", "2", 0.0)
    assert rows[3]["reserved of quota"] is None
    fresh = cluster_queue_info({"metadata": {"name": "new"}, "spec": {}})  # not yet reconciled by Kueue
    assert (fresh.pending, fresh.admitted, fresh.quotas, fresh.cohort, fresh.active) == (0, 0, (), "", "")
    inactive = cluster_queue_json("x")
    inactive["status"]["conditions"] = [{"type": "Active", "status": "False", "reason": "FlavorNotFound"}]
    assert cluster_queue_info(inactive).active == "False (FlavorNotFound)"


def test_queue_tables_put_queues_with_pending_workloads_first_and_sum_them() -> None:
    cqs = [cluster_queue_info(cluster_queue_json(n, pending=p, admitted=a)) for n, p, a in
           (("a-idle", 0, 1), ("b-busy", 3, 2), ("c-idle", 0, 0))]
    rows = queues.cluster_queue_rows(cqs).rows
    assert [r["cluster queue"] for r in rows] == ["b-busy", "a-idle", "c-idle"]
    assert rows[0] == {"cluster queue": "b-busy", "cohort": "research", "pending": 3, "admitted": 2, "reserving": 2,
                       "active": "True"}
    assert queues.totals(cqs) == (3, 3)
    assert queues.quota_rows(cqs).rows[0]["cluster queue"] == "b-busy"
    lq = local_queue_info({"metadata": {"name": "user-queue", "namespace": "team-a"},
                           "spec": {"clusterQueue": "b-busy"},
                           "status": {"pendingWorkloads": 2, "reservingWorkloads": 1, "admittedWorkloads": 1}})
    assert lq == LocalQueueInfo("team-a", "user-queue", "b-busy", 2, 1, 1)
    lqs = queues.local_queue_rows([LocalQueueInfo("team-b", "q", "a-idle"), lq]).rows
    assert [r["local queue"] for r in lqs] == ["user-queue", "q"]
    assert lqs[0] == {"namespace": "team-a", "local queue": "user-queue", "cluster queue": "b-busy", "pending": 2,
                      "admitted": 1, "reserving": 1}


def test_queue_tables_are_bounded_and_say_what_they_left_out() -> None:
    cqs = [ClusterQueueInfo(f"cq{i:04}", quotas=(QuotaUse("f", "cpu", 1), QuotaUse("f", "memory", GIB)))
           for i in range(500)]
    assert (len(queues.cluster_queue_rows(cqs).rows), queues.cluster_queue_rows(cqs).left_out) == (100, 400)
    quota = queues.quota_rows(cqs)
    assert (len(quota.rows), quota.left_out) == (queues.MAX_QUOTA_ROWS, 1000 - queues.MAX_QUOTA_ROWS)
    lqs = queues.local_queue_rows([LocalQueueInfo("ns", f"q{i}", "cq") for i in range(1000)])
    assert (len(lqs.rows), lqs.left_out) == (queues.MAX_LOCAL_QUEUES, 1000 - queues.MAX_LOCAL_QUEUES)


def test_amounts_read_in_each_resources_unit() -> None:
    assert [queues.amount("cpu", v) for v in (0.25, 4.0, 1500.0)] == ["0.25", "4", "1500"]
    assert queues.amount("memory", 1.5 * GIB) == "1.5 GiB" and queues.amount("ephemeral-storage", 0) == "0 B"
    assert queues.amount("nvidia.com/gpu", 8.0) == "8" and queues.amount("pods", 110.0) == "110"


def test_a_namespaced_dashboard_shows_the_local_queues_of_its_namespaces_only() -> None:
    state = Queues("kueue.x-k8s.io/v1beta2", [ClusterQueueInfo("cq")],
                   [LocalQueueInfo("team-a", "q", "cq"), LocalQueueInfo("team-b", "q", "cq")])
    scoped = ScopedSource(MemorySource(queue_state=state), ("team-a",)).queues()
    assert scoped is not None and [q.namespace for q in scoped.local_queues] == ["team-a"]
    assert [c.name for c in scoped.cluster_queues] == ["cq"]
    assert ScopedSource(MemorySource(), ("team-a",)).queues() is None  # Kueue not installed
