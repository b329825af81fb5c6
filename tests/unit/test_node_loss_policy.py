"""Node loss in the TrainingJob policy, pure: what a Node says (Ready, taints) becomes a lost node,
a gang member on one restarts the gang as a `NodeLost` disruption, and pods of an older attempt on a
lost node are force-deleted only once it is fenced (the newer attempt recorded, the fence time past)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.controller import slim
from kubeforge_operator.observe import view
from kubeforge_operator.plan import ObjectRef, World, ts
from kubeforge_operator.render.trainingjob import members, render_pod
from kubeforge_operator.trainingjob.context import Config, Pass
from kubeforge_operator.trainingjob.creation import backoff_elapsed
from kubeforge_operator.trainingjob.decide import decide
from kubeforge_operator.trainingjob.nodes import project_node

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config(default_image="img", backoff_seconds=10)
LOST = {"lostSince": ts(NOW - timedelta(seconds=3)), "why": "tainted node.kubernetes.io/unreachable"}


def node(ready: str = "True", taints: list[Obj] | None = None) -> Obj:
    return {"kind": "Node", "metadata": {"name": "n"}, "spec": {"taints": taints or []},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "NodeStatusUnknown",
                                       "lastTransitionTime": ts(NOW - timedelta(seconds=4))}]}}


def pod(rank: int, node_name: str, attempt: int = 0, phase: str = "Running", deleting: bool = False,
        code: int | None = None) -> Obj:
    spec = TrainingJobSpec.model_validate({"nodes": 2, "command": ["x"]})
    p = render_pod(ObjectRef("demo", "ml", "u", 1), spec, members(spec)[rank], attempt, "img", "1Gi")
    p["metadata"].update({"uid": f"uid-{rank}-{attempt}", "creationTimestamp": ts(NOW - timedelta(seconds=60))})
    if deleting:
        p["metadata"]["deletionTimestamp"] = ts(NOW - timedelta(seconds=1))
    p["spec"]["nodeName"] = node_name
    p["status"] = {"phase": phase}
    if code is not None:
        p["status"]["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {
            "exitCode": code, "reason": "Error", "finishedAt": ts(NOW - timedelta(seconds=5))}}}]
    return slim(p, keep_spec=False)


def world(pods: list[Obj], status: Obj | None = None, nodes: dict[str, Obj] | None = None) -> World:
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
           "spec": {"nodes": 2, "command": ["x"], "runPolicy": {"backoffLimit": 0}},
           "status": status or {"restartCount": 0, "state": "Running"}}
    return World(job, {"Pod": pods, "Service": [{"kind": "Service"}]}, frozenset(), NOW,
                 related={"Node": nodes if nodes is not None else {"a": {}, "b": LOST}})


def test_a_node_is_lost_when_not_ready_or_tainted_unreachable() -> None:
    assert project_node(node()) == {}
    assert project_node(node("Unknown"))["why"] == "Ready=Unknown (NodeStatusUnknown)"
    tainted = project_node(node(taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute",
                                         "timeAdded": ts(NOW)}]))
    assert tainted == {"lostSince": ts(NOW), "why": "tainted node.kubernetes.io/unreachable"}
    assert project_node({"metadata": {"name": "x"}, "spec": {"taints": ["junk", {"key": None}]}}) == {}
    assert project_node(node("False"))["lostSince"] == ts(NOW - timedelta(seconds=4))


def test_the_cache_keeps_the_node_a_pod_is_bound_to() -> None:
    assert view(pod(0, "b")).node == "b"


def test_a_member_on_a_lost_node_restarts_the_gang_as_an_uncounted_disruption() -> None:
    plan = decide(world([pod(0, "a"), pod(1, "b")]), CFG)
    assert plan.status["restartCount"] == 1 and plan.status["disruptions"] == 1
    assert plan.status["lastFailure"]["reason"] == "NodeLost" and plan.status["lastFailure"]["pod"] == "demo-node-1"
    assert "node b" in plan.status["lastFailure"]["message"]
    assert any(e.reason == "NodeLost" and "node b" in e.message for e in plan.events)
    assert {(d.name, d.force) for d in plan.delete} == {("demo-node-0", False), ("demo-node-1", True)}
    assert plan.status["state"] == "Restarting"


def test_node_loss_outranks_the_peer_that_failed_because_of_it() -> None:
    plan = decide(world([pod(0, "a", phase="Failed", code=1), pod(1, "b")]), CFG)  # backoffLimit 0: would fail
    assert plan.status["lastFailure"]["reason"] == "NodeLost" and plan.status["state"] == "Restarting"


def test_healthy_nodes_and_finished_pods_change_nothing() -> None:
    healthy = decide(world([pod(0, "a"), pod(1, "b")], nodes={"a": {}, "b": {}}), CFG)
    assert "lastFailure" not in healthy.status and not healthy.delete
    done_there = decide(world([pod(0, "a"), pod(1, "b", phase="Succeeded")]), CFG)
    assert "lastFailure" not in done_there.status


def test_old_pods_on_a_lost_node_are_force_deleted_only_once_fenced() -> None:
    status = {"restartCount": 1, "disruptions": 1, "state": "Restarting",
              "lastFailure": {"pod": "demo-node-1", "reason": "NodeLost", "time": ts(NOW)}}
    stuck = [pod(0, "a", deleting=True), pod(1, "b", deleting=True)]
    plan = decide(world(stuck, status), CFG)
    assert [(d.name, d.force) for d in plan.delete] == [("demo-node-1", True)]  # node-0 terminates by itself
    waiting = decide(world(stuck, status), replace(CFG, node_fence_seconds=60))
    assert not waiting.delete and waiting.requeue_after is not None
    healed = decide(world(stuck, status, nodes={"a": {}, "b": {}}), CFG)  # back before the fence: no force
    assert not any(d.force for d in healed.delete)


def test_the_next_attempt_after_a_lost_node_does_not_back_off() -> None:
    status = {"restartCount": 1, "disruptions": 1,
              "lastFailure": {"pod": "demo-node-1", "reason": "NodeLost", "time": ts(NOW)}}
    p = Pass(world([], status), CFG)
    assert not backoff_elapsed(p)
