"""Elastic jobs in the TrainingJob policy, pure: a worker on a lost node is ridden out while node rank 0
and `minNodes` workers still run (no gang restart counted, its pod force-deleted once fenced and
created again under the same name and attempt, Running says `Resized`); below `minNodes`, or with
node rank 0 lost, the gang restarts as a `NodeLost` disruption as for any job. A finished rank 0
ends the job even while a recreated worker still waits for capacity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.controller import slim
from kubeforge_operator.plan import ObjectRef, World, ts
from kubeforge_operator.render.trainingjob import members, render_pod
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.decide import decide

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config(default_image="img", backoff_seconds=10, node_fence_seconds=2)
LOST = {"lostSince": ts(NOW - timedelta(seconds=3)), "why": "tainted node.kubernetes.io/unreachable"}
SPEC: Obj = {"nodes": 3, "elastic": {"minNodes": 2, "maxNodes": 3},
             "recipe": {"model": "mlp", "dataset": "digits"}, "runPolicy": {"backoffLimit": 0}}


def pod(rank: int, node_name: str, phase: str = "Running", deleting: bool = False) -> Obj:
    spec = TrainingJobSpec.model_validate(SPEC)
    p = render_pod(ObjectRef("demo", "ml", "u", 1), spec, members(spec)[rank], 0, "img", "1Gi")
    p["metadata"].update({"uid": f"uid-{rank}", "creationTimestamp": ts(NOW - timedelta(seconds=60))})
    if deleting:
        p["metadata"]["deletionTimestamp"] = ts(NOW - timedelta(seconds=1))
    p["spec"]["nodeName"] = node_name
    p["status"] = {"phase": phase}
    return slim(p, keep_spec=False)


def world(pods: list[Obj], min_nodes: int = 2, lost: Obj | None = None) -> World:
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
           "spec": {**SPEC, "elastic": {"minNodes": min_nodes, "maxNodes": 3}},
           "status": {"restartCount": 0, "state": "Running"}}
    return World(job, {"Pod": pods, "Service": [{"kind": "Service"}]}, frozenset(), NOW,
                 related={"Node": {"a": {}, "b": {}, "c": lost if lost is not None else LOST}})


def running(plan: Any) -> Obj:
    return next(c for c in plan.status["conditions"] if c["type"] == "Running")


def test_a_worker_on_a_lost_node_is_deleted_without_a_gang_restart() -> None:
    plan = decide(world([pod(0, "a"), pod(1, "b"), pod(2, "c")]), CFG)
    assert plan.status["restartCount"] == 0 and "disruptions" not in plan.status
    assert {(d.name, d.force) for d in plan.delete} == {("demo-node-2", True)}  # lost 3 s > fence 2 s
    assert running(plan)["status"] == "True" and running(plan)["reason"] == "Resized"
    assert "2 of 3" in running(plan)["message"] and "node c lost" in running(plan)["message"]
    assert any(e.reason == "Resized" for e in plan.events)
    assert plan.status["state"] == "Running"


def test_before_the_fence_time_the_lost_worker_is_deleted_gracefully_and_the_pass_requeued() -> None:
    fresh = {"lostSince": ts(NOW - timedelta(seconds=1)), "why": "Ready=Unknown"}
    plan = decide(world([pod(0, "a"), pod(1, "b"), pod(2, "c")], lost=fresh), CFG)
    assert {(d.name, d.force) for d in plan.delete} == {("demo-node-2", False)}
    assert plan.requeue_after is not None and plan.status["restartCount"] == 0


def test_the_deleted_worker_is_created_again_under_its_name_and_attempt() -> None:
    plan = decide(world([pod(0, "a"), pod(1, "b")]), CFG)
    assert plan.status["restartCount"] == 0 and not plan.delete
    created = [c for c in plan.create if c["kind"] == "Pod"]
    assert [c["metadata"]["name"] for c in created] == ["demo-node-2"]
    assert created[0]["metadata"]["labels"]["kubeforge.dev/attempt"] == "0"


def test_below_min_nodes_the_gang_restarts_as_a_node_lost_disruption() -> None:
    plan = decide(world([pod(0, "a"), pod(1, "b"), pod(2, "c")], min_nodes=3), CFG)
    assert plan.status["restartCount"] == 1 and plan.status["disruptions"] == 1
    assert plan.status["lastFailure"]["reason"] == "NodeLost"


def test_losing_node_rank_0_the_rendezvous_host_restarts_the_gang() -> None:
    plan = decide(world([pod(0, "c"), pod(1, "a"), pod(2, "b")]), CFG)
    assert plan.status["restartCount"] == 1 and plan.status["lastFailure"]["pod"] == "demo-node-0"


def test_a_finished_rank_0_ends_the_job_though_a_worker_waits_for_capacity() -> None:
    plan = decide(world([pod(0, "a", "Succeeded"), pod(1, "b", "Succeeded"), pod(2, "", "Pending")]), CFG)
    assert plan.status["state"] == "Succeeded" and plan.status["restartCount"] == 0


def test_elastic_pods_rendezvous_with_a_short_last_call_and_rank_0_hosting_the_store() -> None:
    spec = TrainingJobSpec.model_validate(SPEC)
    pods = [render_pod(ObjectRef("demo", "ml", "u", 1), spec, m, 0, "img", "1Gi") for m in members(spec)]
    envs = [{e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]} for p in pods]
    assert all("last_call_timeout=1," in e["PET_RDZV_CONF"] and "join_timeout=" in e["PET_RDZV_CONF"] for e in envs)
    assert ["is_host=true" in e["PET_RDZV_CONF"] for e in envs] == [True, False, False]
    assert envs[1]["PET_LOCAL_ADDR"].startswith("demo-node-1.demo-workers.ml.")
