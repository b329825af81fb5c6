"""A TrainingJob queued by Kueue, pure: the Workload rendered for it (pod sets with requests, minCount
for an elastic job, the WorkloadPriorityClass), and the decisions at each Workload transition: not
admitted -> no pods and Queued with Kueue's words; admitted -> pods on the admitted flavors; evicted
-> pods deleted, a disruption not counted, the admission given back once no pod runs; ended ->
Finished. A job without the queue label never creates a Workload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubeforge_api.conditions import find, is_true
from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.controller import slim
from kubeforge_operator.plan import ObjectRef, World, ts
from kubeforge_operator.render.trainingjob import members, render_pod
from kubeforge_operator.render.workload import project_flavor, release_patch, render_workload, workload_name
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.decide import decide

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config(default_image="img", backoff_seconds=10, kueue=True)
REF = ObjectRef("demo", "ml", "u1234567", 1)
SPEC: Obj = {"nodes": 2, "command": ["x"], "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
             "runPolicy": {"backoffLimit": 0}}
FLAVORS = {"fast": project_flavor({"spec": {"nodeLabels": {"pool": "fast"}, "tolerations": [
    {"key": "pool", "operator": "Equal", "value": "fast", "effect": "NoSchedule"}]}})}


def job(labels: Obj | None = None, status: Obj | None = None, spec: Obj | None = None) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "demo", "namespace": "ml", "uid": REF.uid, "generation": 1,
                         "labels": {"kueue.x-k8s.io/queue-name": "team"} if labels is None else labels},
            "spec": spec or SPEC, "status": status or {}}


def cond(ctype: str, status: bool, reason: str, message: str = "") -> Obj:
    return {"type": ctype, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": ts(NOW - timedelta(seconds=5))}


def workload(*conds: Obj, admitted: bool = False) -> Obj:
    wl = render_workload(REF, TrainingJobSpec.model_validate(SPEC), "team", None, "img", "1Gi")
    wl["metadata"].update({"uid": "w", "resourceVersion": "7", "generation": 1})
    wl["status"] = {"conditions": list(conds)}
    if admitted:
        wl["status"]["admission"] = {"clusterQueue": "cq", "podSetAssignments": [
            {"name": "node", "flavors": {"cpu": "fast", "memory": "fast"}, "count": 2}]}
    return slim(wl, keep_spec=False)


def pod(rank: int, attempt: int = 0, phase: str = "Running") -> Obj:
    spec = TrainingJobSpec.model_validate(SPEC)
    p = render_pod(REF, spec, members(spec)[rank], attempt, "img", "1Gi")
    p["metadata"].update({"uid": f"p{rank}{attempt}", "creationTimestamp": ts(NOW - timedelta(seconds=60))})
    p["status"] = {"phase": phase}
    return slim(p, keep_spec=False)


def world(obj: Obj, wl: Obj | None = None, pods: list[Obj] | None = None) -> World:
    children: dict[str, list[Obj]] = {"Service": [{"kind": "Service"}], "Pod": pods or []}
    if wl is not None:
        children["Workload"] = [wl]
    return World(obj, children, frozenset(), NOW, related={"Node": {}, "ResourceFlavor": FLAVORS})


ADMITTED = (cond("QuotaReserved", True, "QuotaReserved"), cond("Admitted", True, "Admitted"))
EVICTED = (*ADMITTED, cond("Evicted", True, "Preempted", "Preempted to accommodate a workload (UID: x)"))


def test_the_workload_asks_for_each_role_with_its_requests() -> None:
    spec = TrainingJobSpec.model_validate({**SPEC, "nodes": 3, "elastic": {"minNodes": 2, "maxNodes": 4}})
    wl = render_workload(REF, spec, "team", ("high", 1000), "img", "1Gi")
    assert wl["apiVersion"] == "kueue.x-k8s.io/v1beta2" and wl["metadata"]["name"] == workload_name(REF)
    owner = wl["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "TrainingJob" and owner["uid"] == REF.uid and owner["controller"] is True
    assert wl["spec"]["queueName"] == "team" and wl["spec"]["priority"] == 1000
    assert wl["spec"]["priorityClassRef"] == {"group": "kueue.x-k8s.io", "kind": "WorkloadPriorityClass",
                                              "name": "high"}
    [node] = wl["spec"]["podSets"]
    assert (node["name"], node["count"], node["minCount"]) == ("node", 3, 2)
    assert node["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "500m", "memory": "256Mi"}


def test_a_job_without_the_label_behaves_as_before() -> None:
    plan = decide(world(job(labels={})), CFG)
    assert [c["kind"] for c in plan.create] == ["Pod", "Pod"]
    assert find(plan.status.get("conditions") or [], "Queued") is None


def test_a_queued_job_creates_its_workload_and_no_pods() -> None:
    plan = decide(world(job()), CFG)
    assert [c["kind"] for c in plan.create] == ["Workload"]
    assert plan.status["state"] == "Queued" and is_true(plan.status["conditions"], "Queued")


def test_not_admitted_waits_with_kueues_reason() -> None:
    pending = cond("QuotaReserved", False, "Pending", "couldn't assign flavors to pod set node: insufficient quota")
    plan = decide(world(job(), workload(pending)), CFG)
    assert not plan.create and plan.status["state"] == "Queued"
    queued = find(plan.status["conditions"], "Queued")
    assert queued is not None and queued["reason"] == "Pending" and "insufficient quota" in queued["message"]


def test_admitted_starts_pods_on_the_admitted_flavor() -> None:
    plan = decide(world(job(), workload(*ADMITTED, admitted=True)), CFG)
    pods = [c for c in plan.create if c["kind"] == "Pod"]
    assert len(pods) == 2
    assert all(p["spec"]["nodeSelector"]["pool"] == "fast" for p in pods)
    assert all({"key": "pool", "operator": "Equal", "value": "fast", "effect": "NoSchedule"}
               in p["spec"]["tolerations"] for p in pods)
    queued = find(plan.status["conditions"], "Queued")
    assert queued is not None and queued["status"] == "False" and queued["reason"] == "Admitted"


def test_an_unknown_flavor_delays_the_pods() -> None:
    wl = workload(*ADMITTED, admitted=True)
    wl["status"]["admission"]["podSetAssignments"][0]["flavors"] = {"cpu": "later"}
    plan = decide(world(job(), wl), CFG)
    assert not [c for c in plan.create if c["kind"] == "Pod"] and plan.requeue_after is not None


def test_eviction_stops_the_gang_as_a_disruption_then_gives_the_admission_back() -> None:
    running = job(status={"restartCount": 0, "state": "Running", "startTime": ts(NOW)})
    plan = decide(world(running, workload(*EVICTED, admitted=True), [pod(0), pod(1)]), CFG)
    assert {d.name for d in plan.delete} == {"demo-node-0", "demo-node-1"}
    assert plan.status["restartCount"] == 1 and plan.status["disruptions"] == 1
    assert plan.status["lastFailure"]["reason"] == "Evicted" and plan.status["state"] == "Queued"
    assert any(e.reason == "Evicted" and e.type == "Warning" for e in plan.events)
    assert not plan.child_status  # the pods still run: the quota stays reserved until they are gone
    # The pods are gone: the admission is given back, nothing counted again.
    after = job(status=plan.status)
    plan = decide(world(after, workload(*EVICTED, admitted=True)), CFG)
    assert plan.status["restartCount"] == 1 and not plan.delete and not plan.create
    [write] = plan.child_status
    assert write.kind == "Workload" and write.resource_version == "7" and write.status["admission"] is None
    conds = write.status["conditions"]
    assert is_true(conds, "Requeued") and not is_true(conds, "QuotaReserved") and not is_true(conds, "Admitted")


def test_re_admitted_after_eviction_starts_the_next_attempt_without_back_off() -> None:
    status = {"restartCount": 1, "disruptions": 1, "state": "Queued",
              "lastFailure": {"pod": "demo-node-0", "reason": "Evicted", "time": ts(NOW)}}
    plan = decide(world(job(status=status), workload(*ADMITTED, admitted=True)), CFG)
    pods = [c for c in plan.create if c["kind"] == "Pod"]
    assert [p["metadata"]["labels"]["kubeforge.dev/attempt"] for p in pods] == ["1", "1"]


def test_the_release_patch_matches_kueues() -> None:
    patch = release_patch(workload(*EVICTED, admitted=True), ts(NOW))
    quota = find(patch["conditions"], "QuotaReserved")
    assert quota is not None and quota["reason"] == "Pending" and "Preempted" in str(find(
        patch["conditions"], "Requeued"))


def test_an_ended_job_marks_its_workload_finished() -> None:
    ended = job(status={"restartCount": 0, "state": "Succeeded", "completionTime": ts(NOW),
                        "conditions": [cond("Succeeded", True, "Completed")]})
    plan = decide(world(ended, workload(*ADMITTED, admitted=True)), CFG)
    [write] = plan.child_status
    finished = find(write.status["conditions"], "Finished")
    assert finished is not None and finished["status"] == "True" and finished["reason"] == "Succeeded"
    done = workload(*ADMITTED, cond("Finished", True, "Succeeded"), admitted=True)
    assert not decide(world(ended, done), CFG).child_status


def test_without_kueue_a_queued_job_says_so() -> None:
    plan = decide(world(job()), Config(default_image="img"))
    assert not plan.create and plan.status["reason"] == "KueueNotInstalled"


def test_the_priority_class_is_looked_up_and_waited_for() -> None:
    labelled = job(labels={"kueue.x-k8s.io/queue-name": "team", "kueue.x-k8s.io/priority-class": "high"})
    plan = decide(world(labelled), CFG)
    assert not plan.create and plan.status["reason"] == "WorkloadPriorityClassNotFound" and plan.requeue_after
    known = World(labelled, {"Pod": []}, frozenset(), NOW, related={"WorkloadPriorityClass": {"high": {"value": 7}}})
    [wl] = decide(known, CFG).create
    assert wl["spec"]["priority"] == 7 and wl["spec"]["priorityClassRef"]["name"] == "high"


def test_suspending_deactivates_the_workload_and_gives_its_quota_back() -> None:
    suspended = job(spec={**SPEC, "runPolicy": {"backoffLimit": 0, "suspend": True}},
                    status={"restartCount": 0, "state": "Running"})
    plan = decide(world(suspended, workload(*ADMITTED, admitted=True), [pod(0), pod(1)]), CFG)
    [apply] = plan.update
    assert apply["kind"] == "Workload" and apply["spec"] == {"active": False}
    assert {d.name for d in plan.delete} == {"demo-node-0", "demo-node-1"} and plan.status["state"] == "Suspended"
    deactivated = workload(*ADMITTED, cond("Evicted", True, "Deactivated", "The workload is deactivated"),
                           admitted=True)
    deactivated["metadata"]["annotations"] = {"kubeforge.dev/active": "false"}
    plan = decide(world(suspended, deactivated), CFG)
    assert not plan.update  # applied already: no write
    [write] = plan.child_status
    assert write.status["admission"] is None and not is_true(write.status["conditions"], "Requeued")
    resumed = decide(world(job(status=plan.status), deactivated), CFG)
    assert [u["spec"] for u in resumed.update] == [{"active": True}] and resumed.status["state"] == "Queued"


def test_a_partially_admitted_elastic_job_starts_only_the_admitted_workers() -> None:
    spec = {**SPEC, "nodes": 3, "elastic": {"minNodes": 2, "maxNodes": 3}}
    wl = workload(*ADMITTED, admitted=True)  # Kueue admitted 2 of the 3 workers asked for (minCount 2)
    plan = decide(world(job(spec=spec), wl), CFG)
    ranks = sorted(int(c["metadata"]["labels"]["kubeforge.dev/rank"]) for c in plan.create if c["kind"] == "Pod")
    assert ranks == [0, 1]
    wl["status"]["admission"]["podSetAssignments"][0]["count"] = 3
    plan = decide(world(job(spec=spec), wl), CFG)
    assert len([c for c in plan.create if c["kind"] == "Pod"]) == 3
