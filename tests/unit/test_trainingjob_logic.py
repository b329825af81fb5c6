"""Table-driven tests of the pure parts: render, observe, status (`decide`), the exit-code table and
the condition helpers."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubeforge_api.conditions import set_condition
from kubeforge_api.exitcodes import FailureClass, classify
from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.controller import status_patch
from kubeforge_operator.plan import ObjectRef, World, ts
from kubeforge_operator.render.trainingjob import members, render_pod, render_service
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.creation import backoff
from kubeforge_operator.trainingjob.decide import decide

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config(default_image="kubeforge/trainer:test", backoff_seconds=10, backoff_max_seconds=300)


def tj(spec: Obj | None = None, status: Obj | None = None) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1", "generation": 2,
                         "resourceVersion": "7"},
            "spec": {"nodes": 2, "command": ["python", "train.py"], **(spec or {})}, "status": status or {}}


def pod(rank: int, phase: str = "Running", attempt: int = 0, role: str = "node", **extra: Any) -> Obj:
    ref = ObjectRef("demo", "ml", "uid-1", 2)
    spec = TrainingJobSpec.model_validate(tj()["spec"])
    member = next(m for m in members(spec) if m.role == role and m.rank == rank)
    p = render_pod(ref, spec, member, attempt, "img", "1Gi")
    p["metadata"].update({"uid": f"pod-{role}-{rank}-{attempt}", "creationTimestamp": ts(NOW - timedelta(seconds=60))})
    p["status"] = {"phase": phase, **extra}
    return p


def terminated(code: int, reason: str = "Error", at: datetime = NOW) -> Obj:
    return {"containerStatuses": [{"name": "trainer", "state": {"terminated": {
        "exitCode": code, "reason": reason, "finishedAt": ts(at), "message": "boom"}}}]}


def run(job: Obj, pods: list[Obj], service: bool = True, now: datetime = NOW) -> Any:
    children = {"Pod": [{"kind": "Pod", **p} for p in pods], "Service": [{"kind": "Service"}] if service else []}
    return decide(World(job, children, frozenset(), now), CFG)


def cond(plan: Any, ctype: str) -> Obj:
    return next(c for c in plan.status["conditions"] if c["type"] == ctype)


# ---------- render ----------

def test_a_command_runs_under_the_artifact_wrapper_with_the_output_dir_on_node_0_only() -> None:
    spec = TrainingJobSpec.model_validate({"nodes": 2, "command": ["torchrun", "x.py"], "args": ["--lr", "1"]})
    ref = ObjectRef("j", "ns", "u", 1)
    node0, node1 = (render_pod(ref, spec, m, 0, "img", "1Gi")["spec"]["containers"][0] for m in members(spec))
    assert node0["command"] == ["python", "-m", "kubeforge_trainer.command", "--", "torchrun", "x.py"]
    assert node0["args"] == ["--lr", "1"]
    outputs = [{e["name"]: e.get("value") for e in c["env"]}.get("KUBEFORGE_OUTPUT_DIR") for c in (node0, node1)]
    assert outputs == ["/kubeforge/storage/artifact", None]
    own_image = TrainingJobSpec.model_validate({"command": ["my-train"], "image": "example.com/mine:1"})
    assert render_pod(ref, own_image, members(own_image)[0], 0, "img", "1Gi")["spec"]["containers"][0][
        "command"] == ["my-train"]


def test_render_wires_torchrun_and_is_restricted() -> None:
    spec = TrainingJobSpec.model_validate({"nodes": 3, "procsPerNode": 2, "command": ["torchrun", "x.py"],
                                           "resources": {"limits": {"nvidia.com/gpu": 2}},
                                           "env": [{"name": "A", "value": "b"}]})
    p = render_pod(ObjectRef("j", "ns", "u", 1), spec, members(spec)[1], 4, "img", "2Gi")
    env = {e["name"]: e["value"] for e in p["spec"]["containers"][0]["env"] if "value" in e}
    assert p["metadata"]["name"] == p["spec"]["hostname"] == "j-node-1" and p["spec"]["subdomain"] == "j-workers"
    assert (env["PET_NNODES"], env["PET_NPROC_PER_NODE"], env["PET_NODE_RANK"]) == ("3", "2", "1")
    assert env["PET_MASTER_ADDR"] == "j-node-0.j-workers.ns.svc.cluster.local" and env["PET_MASTER_PORT"] == "29500"
    assert env["KUBEFORGE_ATTEMPT"] == "4" and env["KUBEFORGE_DIST_BACKEND"] == "nccl" and env["A"] == "b"
    assert p["metadata"]["labels"]["kubeforge.dev/attempt"] == "4"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p["spec"]["tolerations"]
    c = p["spec"]["containers"][0]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert p["spec"]["securityContext"]["runAsNonRoot"] is True
    assert p["spec"]["automountServiceAccountToken"] is False and p["spec"]["restartPolicy"] == "Never"
    shm = next(v for v in p["spec"]["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert p["metadata"]["ownerReferences"][0] == {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
                                                    "name": "j", "uid": "u", "controller": True,
                                                    "blockOwnerDeletion": True}


def test_render_parameter_servers_and_elastic() -> None:
    ps = TrainingJobSpec.model_validate({"strategy": "parameter-server", "nodes": 2, "parameterServers": 2,
                                         "recipe": {"model": "mlp", "dataset": "digits"}})
    roles = [(m.role, m.rank, m.node_rank) for m in members(ps)]
    assert roles == [("node", 0, 0), ("node", 1, 1), ("ps", 0, 2), ("ps", 1, 3)]
    p = render_pod(ObjectRef("j", "ns", "u", 1), ps, members(ps)[3], 0, "img", "1Gi")
    env = {e["name"]: e["value"] for e in p["spec"]["containers"][0]["env"] if "value" in e}
    assert env["PET_NNODES"] == "4" and env["KUBEFORGE_ROLE"] == "ps"
    assert env["KUBEFORGE_PS_ADDRESSES"] == ",".join(f"j-ps-{i}.j-workers.ns.svc.cluster.local" for i in (0, 1))
    assert p["spec"]["containers"][0]["command"] == ["python", "-m", "kubeforge_trainer", "launch"]
    el = TrainingJobSpec.model_validate({"nodes": 2, "elastic": {"minNodes": 1, "maxNodes": 3},
                                         "command": ["torchrun", "t.py"]})
    env = {e["name"]: e["value"] for e in render_pod(ObjectRef("j", "ns", "u", 1), el, members(el)[0], 0, "i",
                                                     "1Gi")["spec"]["containers"][0]["env"] if "value" in e}
    assert env["PET_NNODES"] == "1:3" and env["PET_RDZV_BACKEND"] == "c10d" and env["PET_RDZV_ID"] == "u-0"


def test_headless_service_publishes_not_ready_pods() -> None:
    svc = render_service(ObjectRef("j", "ns", "u", 1))
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"kubeforge.dev/job-name": "j"}


# ---------- exit codes and conditions ----------

@pytest.mark.parametrize(("code", "reason", "disrupted", "expected"), [
    (137, "Error", False, FailureClass.RETRYABLE),
    (143, "Error", False, FailureClass.RETRYABLE),
    (200, "Error", False, FailureClass.RETRYABLE),
    (137, "OOMKilled", False, FailureClass.RETRYABLE),
    (1, "Error", False, FailureClass.PERMANENT),
    (78, "Error", False, FailureClass.PERMANENT),
    (2, "Error", False, FailureClass.PERMANENT),
    (1, "Error", True, FailureClass.DISRUPTION),
    (0, "Evicted", True, FailureClass.DISRUPTION),
])
def test_exit_code_table(code: int, reason: str, disrupted: bool, expected: FailureClass) -> None:
    assert classify(code, reason, disrupted) == expected


def test_set_condition_is_idempotent_and_keeps_transition_time() -> None:
    a = set_condition([], "Running", True, "AllPodsRunning", "ok", "t1", 1)
    assert set_condition(a, "Running", True, "AllPodsRunning", "ok", "t2", 1) is a
    b = set_condition(a, "Running", True, "AllPodsRunning", "still ok", "t3", 1)
    assert b[0]["lastTransitionTime"] == "t1" and b[0]["message"] == "still ok"
    c = set_condition(b, "Running", False, "ExitCode", "bad", "t4", 1)
    assert c[0]["lastTransitionTime"] == "t4"


def test_a_status_patch_removes_what_the_new_status_leaves_out_at_every_depth() -> None:
    """A merge patch merges nested objects: a count that dropped to 0 (and so is left out) must be
    nulled, or the API server keeps the old number."""
    old = {"state": "Running", "replicaStatuses": {"node": {"active": 2}}, "progress": {"step": 5, "etaSeconds": 3}}
    new = {"state": "Succeeded", "replicaStatuses": {"node": {"succeeded": 2}}, "progress": {"step": 5}}
    assert status_patch(old, new) == {"state": "Succeeded", "progress": {"etaSeconds": None},
                                      "replicaStatuses": {"node": {"succeeded": 2, "active": None}}}
    assert status_patch(new, new) == {} and status_patch(old, {}) == {k: None for k in old}


def test_backoff_doubles_and_caps() -> None:
    assert [backoff(n, CFG) for n in (1, 2, 3, 6, 20)] == [10, 20, 40, 300, 300]


# ---------- decide ----------

def test_new_job_creates_service_and_pods_and_says_why_it_waits() -> None:
    plan = run(tj(), [], service=False)
    assert [o["kind"] for o in plan.create] == ["Service", "Pod", "Pod"]
    assert cond(plan, "Running")["reason"] == "ContainerCreating"  # no separate Created condition
    assert plan.status["state"] == "Created" and plan.status["observedGeneration"] == 2
    assert plan.status["startTime"] == ts(NOW)
    assert [(e.reason, e.message) for e in plan.events] == [("PodsCreated", "created the pods of attempt 0")]
    assert all(c["observedGeneration"] == 2 for c in plan.status["conditions"])


def test_unchanged_world_gives_an_unchanged_status_and_no_actions() -> None:
    pods = [pod(0), pod(1)]
    first = run(tj(), pods)
    again = run(tj(status=first.status), pods)
    assert again.status == first.status
    assert not again.create and not again.delete and not again.events
    assert again.requeue_after == CFG.progress_interval_seconds  # only to poll rank 0's progress


@pytest.mark.parametrize(("extra", "reason"), [
    ({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                      "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]}, "Unschedulable"),
    ({"containerStatuses": [{"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                                      "message": "Back-off"}}}]}, "ImagePullBackOff"),
    ({"containerStatuses": [{"name": "trainer", "state": {"waiting": {"reason": "CreateContainerConfigError",
                                                                      "message": "no key"}}}]},
     "CreateContainerConfigError"),
])
def test_pending_pods_surface_their_reason(extra: Obj, reason: str) -> None:
    plan = run(tj(), [pod(0), pod(1, "Pending", **extra)])
    running = cond(plan, "Running")
    assert running["status"] == "False" and running["reason"] == reason and "demo-node-1" in running["message"]
    assert plan.status["reason"] == reason


def test_pods_merely_starting_give_one_stable_message() -> None:
    """No news is no write: the status while pods start does not change with which pod is seen."""
    first = run(tj(), [], service=False)
    later = run(tj(status=first.status), [pod(0, "Pending"), pod(1, "Pending")])
    assert cond(later, "Running")["reason"] == "ContainerCreating"
    assert cond(later, "Running") == cond(first, "Running")


def test_the_order_pods_are_seen_in_does_not_change_the_status() -> None:
    """Caches fill in event order, which differs after an operator restart: no write may follow."""
    blocked = {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                               "message": "0/1 nodes are available"}]}
    pods = [pod(0, "Pending", **blocked), pod(1, "Pending", **blocked)]
    assert run(tj(), pods).status == run(tj(), pods[::-1]).status


def test_pods_turning_unschedulable_one_by_one_write_the_status_once() -> None:
    """Which of several blocked pods the condition names is no news: rank 1 blocked first, then
    rank 0 too, leaves the status as it was (no write); the message moves on only when its pod is
    no longer blocked."""
    blocked = {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                               "message": "0/1 nodes are available"}]}
    first = run(tj(), [pod(0, "Pending"), pod(1, "Pending", **blocked)])
    assert cond(first, "Running")["reason"] == "Unschedulable" and "demo-node-1" in cond(first, "Running")["message"]
    both = run(tj(status=first.status), [pod(0, "Pending", **blocked), pod(1, "Pending", **blocked)])
    assert both.status == first.status
    moved = run(tj(status=both.status), [pod(0, "Pending", **blocked), pod(1, "Pending")])
    assert "demo-node-0" in cond(moved, "Running")["message"]


def test_all_running_then_all_succeeded() -> None:
    plan = run(tj(), [pod(0), pod(1)])
    assert cond(plan, "Running")["status"] == "True" and plan.status["state"] == "Running"
    plan = run(tj(status=plan.status), [pod(0, "Succeeded"), pod(1, "Succeeded")])
    assert cond(plan, "Succeeded")["status"] == "True" and plan.status["completionTime"] == ts(NOW)
    assert plan.status["replicaStatuses"] == {"node": {"succeeded": 2}}  # counts of 0 are left out
    assert [e.reason for e in plan.events] == ["Completed"]
    assert "etaSeconds" not in plan.status.get("progress", {})


def test_sigkill_restarts_the_gang_and_counts_once() -> None:
    killed = pod(1, "Failed", **terminated(137, at=NOW - timedelta(seconds=1)))
    pods = [pod(0, "Failed", **terminated(1, at=NOW)), killed]  # rank 0 exits 1 because its peer was killed
    plan = run(tj(), pods)
    assert plan.status["restartCount"] == 1 and plan.status["lastFailure"]["pod"] == "demo-node-1"
    assert cond(plan, "Restarting")["status"] == "True" and plan.status["state"] == "Restarting"
    assert sorted(c.name for c in plan.delete) == ["demo-node-0", "demo-node-1"]
    assert not plan.create
    # The same world seen again (old pods still terminating) must not count a second restart.
    again = run(tj(status=plan.status), pods)
    assert again.status["restartCount"] == 1 and not again.create
    # Old attempt gone, but still inside the backoff window: wait.
    waiting = run(tj(status=plan.status), [], now=NOW + timedelta(seconds=5))
    assert not waiting.create and waiting.requeue_after == pytest.approx(4, abs=0.1)
    # After the backoff the new attempt is created with attempt=1 labels.
    later = run(tj(status=plan.status), [], now=NOW + timedelta(seconds=11))
    assert [p["metadata"]["labels"]["kubeforge.dev/attempt"] for p in later.create] == ["1", "1"]


def test_exit_1_fails_the_job_at_once_with_last_failure() -> None:
    plan = run(tj(), [pod(0), pod(1, "Failed", **terminated(1))])
    assert cond(plan, "Failed")["reason"] == "ExitCode" and plan.status["state"] == "Failed"
    assert plan.status["lastFailure"] == {"pod": "demo-node-1", "container": "trainer", "exitCode": 1,
                                          "reason": "Error", "message": "boom", "time": ts(NOW)}
    # cleanPodPolicy Running keeps the finished pods; the failed one stays in any case, for its logs
    assert [(c.name, c.uid) for c in plan.delete] == [("demo-node-0", "pod-node-0-0")]


def test_backoff_limit_exceeded() -> None:
    status = {"restartCount": 2, "disruptions": 0}
    plan = run(tj({"runPolicy": {"backoffLimit": 2}}, status),
               [pod(0, attempt=2), pod(1, "Failed", attempt=2, **terminated(137))])
    assert cond(plan, "Failed")["reason"] == "BackoffLimitExceeded"


def test_disruptions_do_not_consume_the_backoff_limit() -> None:
    status = {"restartCount": 3, "disruptions": 3}
    evicted = pod(1, "Failed", attempt=3, conditions=[{"type": "DisruptionTarget", "status": "True"}], reason="Evicted")
    plan = run(tj({"runPolicy": {"backoffLimit": 0}}, status), [pod(0, attempt=3), evicted])
    assert plan.status["restartCount"] == 4 and plan.status["disruptions"] == 4
    assert "Failed" not in {c["type"] for c in plan.status["conditions"]}


def test_externally_deleted_pod_is_a_disruption() -> None:
    gone = pod(1)
    gone["metadata"]["deletionTimestamp"] = ts(NOW)
    plan = run(tj(), [pod(0), gone])
    assert plan.status["restartCount"] == 1 and plan.status["disruptions"] == 1


def test_deadlines() -> None:
    started = {"startTime": ts(NOW - timedelta(seconds=100))}
    plan = run(tj({"runPolicy": {"activeDeadlineSeconds": 50}}, started), [pod(0), pod(1)])
    assert cond(plan, "Failed")["reason"] == "DeadlineExceeded" and len(plan.delete) == 2
    plan = run(tj({"runPolicy": {"startupDeadlineSeconds": 30}}), [pod(0), pod(1, "Pending")])
    assert cond(plan, "Failed")["reason"] == "StartupDeadlineExceeded"
    plan = run(tj({"runPolicy": {"startupDeadlineSeconds": 90}}), [pod(0), pod(1, "Pending")])
    assert "Failed" not in {c["type"] for c in plan.status["conditions"]}
    assert plan.requeue_after == pytest.approx(30)


def test_suspend_and_resume() -> None:
    plan = run(tj({"runPolicy": {"suspend": True}}, {"startTime": ts(NOW)}), [pod(0), pod(1)])
    assert plan.status["state"] == "Suspended" and len(plan.delete) == 2 and "startTime" not in plan.status
    resumed = run(tj(status=plan.status), [])
    assert cond(resumed, "Suspended")["status"] == "False" and len(resumed.create) == 2


def test_ttl_after_finished_deletes_the_job() -> None:
    done = run(tj({"runPolicy": {"ttlSecondsAfterFinished": 60}}), [pod(0, "Succeeded"), pod(1, "Succeeded")])
    early = run(tj({"runPolicy": {"ttlSecondsAfterFinished": 60}}, done.status), [])
    assert not early.delete_self and early.requeue_after == pytest.approx(60)
    late = run(tj({"runPolicy": {"ttlSecondsAfterFinished": 60}}, done.status), [], now=NOW + timedelta(seconds=61))
    assert late.delete_self


@pytest.mark.parametrize(("policy", "deleted"), [("All", ["demo-node-0"]), ("Running", ["demo-node-0"]),
                                                 ("None", [])])
def test_clean_pod_policy(policy: str, deleted: list[str]) -> None:
    plan = run(tj({"runPolicy": {"cleanPodPolicy": policy}}), [pod(0), pod(1, "Failed", **terminated(2))])
    assert sorted(c.name for c in plan.delete) == deleted


def test_invalid_spec_fails_with_invalid_spec() -> None:
    bad = tj({"recipe": {"model": "mlp", "dataset": "digits"}})  # recipe and command together
    plan = run(bad, [])
    assert cond(plan, "Failed")["reason"] == "InvalidSpec" and "exactly one" in cond(plan, "Failed")["message"]
    assert not plan.create


def test_terminal_conditions_never_flip_back() -> None:
    failed = run(tj(), [pod(0), pod(1, "Failed", **terminated(1))])
    later = run(tj(status=copy.deepcopy(failed.status)), [pod(0, "Succeeded"), pod(1, "Failed", **terminated(1))])
    assert cond(later, "Failed")["status"] == "True" and "Succeeded" not in {c["type"] for c in
                                                                            later.status["conditions"]}


def test_the_compression_pod_reads_eval_data_from_a_claim_or_a_copy_of_an_s3_object() -> None:
    from kubeforge_operator.render.trainingjob import render_compression_pod

    def compression_pod(eval_data: Obj) -> Obj:
        spec = TrainingJobSpec.model_validate({
            "command": ["python", "train.py"], "storage": {"persistentVolumeClaim": {"claimName": "runs"}},
            "compression": {"methods": [{"quantize": {}}], "evalData": eval_data}})
        return render_compression_pod(ObjectRef("j", "ns", "u", 1), spec, 1, "img", "1Gi")["spec"]

    on_claim = compression_pod({"uri": "pvc://data/eval/reviews.jsonl", "format": "jsonl"})
    env = {e["name"]: e.get("value") for e in on_claim["containers"][0]["env"]}
    assert env["KUBEFORGE_COMPRESS_EVAL_DATA"] == "/kubeforge/inputs/eval-data/eval/reviews.jsonl"
    assert {"name": "eval-data", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}} in \
        on_claim["volumes"]
    assert "initContainers" not in on_claim
    in_s3 = compression_pod({"uri": "s3://eval/sets/images/", "format": "images", "secretRef": {"name": "k"}})
    (init,) = in_s3["initContainers"]
    assert init["args"][:3] == ["fetch", "--uri", "s3://eval/sets/images/"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in init["env"]} == {"k"}
    main_env = {e["name"]: e.get("value") for e in in_s3["containers"][0]["env"]}
    assert main_env["KUBEFORGE_COMPRESS_EVAL_DATA"] == "/kubeforge/inputs/eval-data"
    assert {"name": "eval-data", "mountPath": "/kubeforge/inputs/eval-data", "readOnly": True} in \
        in_s3["containers"][0]["volumeMounts"]
    assert not [e for e in in_s3["containers"][0]["env"] if "secretKeyRef" in (e.get("valueFrom") or {})]


def test_every_fine_tune_worker_reads_the_base_model_and_data_from_a_claim_or_a_copy() -> None:
    spec = TrainingJobSpec.model_validate({"nodes": 2, "strategy": "fsdp", "finetune": {
        "model": {"uri": "s3://models/base/tiny-llama/", "secretRef": {"name": "s3"}},
        "data": {"uri": "pvc://data/chat/train.jsonl"}, "evalData": {"uri": "pvc://data/chat/eval.jsonl"}}})
    for member in members(spec):
        pod = render_pod(ObjectRef("j", "ns", "u", 1), spec, member, 0, "img", "1Gi")["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["KUBEFORGE_FINETUNE_MODEL_DIR"] == "/kubeforge/inputs/base-model"
        assert env["KUBEFORGE_FINETUNE_DATA"] == "/kubeforge/inputs/train-data/chat/train.jsonl"
        assert env["KUBEFORGE_FINETUNE_EVAL_DATA"] == "/kubeforge/inputs/eval-data/chat/eval.jsonl"
        (init,) = pod["initContainers"]
        assert init["name"] == "fetch-base-model" and "s3://models/base/tiny-llama/" in init["args"]
        assert pod["containers"][0]["command"] == ["python", "-m", "kubeforge_trainer", "launch"]
