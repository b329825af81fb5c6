"""Each step of the TrainingJob policy on its own, table-driven: given a job and its pods, whether
the step settles the pass, and what it leaves in the status and the plan."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubeforge_api.contracts import ProgressDoc
from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.plan import ObjectRef, World, ts
from kubeforge_operator.render.trainingjob import members, render_compression_pod, render_pod
from kubeforge_operator.trainingjob.compression import compressing
from kubeforge_operator.trainingjob.context import Config, Pass
from kubeforge_operator.trainingjob.creation import backoff_elapsed, create_missing, old_attempt_gone
from kubeforge_operator.trainingjob.deadlines import active_deadline
from kubeforge_operator.trainingjob.decide import decide
from kubeforge_operator.trainingjob.failures import failed_or_restarting
from kubeforge_operator.trainingjob.finished import finished
from kubeforge_operator.trainingjob.progress import record_progress
from kubeforge_operator.trainingjob.running import running_or_why_not
from kubeforge_operator.trainingjob.success import succeeded
from kubeforge_operator.trainingjob.suspend import suspended
from kubeforge_operator.trainingjob.validate import invalid_spec

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config(default_image="img", backoff_seconds=10)
DONE = {"conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed"}], "state": "Succeeded",
        "completionTime": ts(NOW - timedelta(seconds=30))}
FAILED = {"conditions": [{"type": "Failed", "status": "True", "reason": "ExitCode"}], "state": "Failed",
          "lastFailure": {"pod": "demo-node-1"}, "completionTime": ts(NOW)}


def pod(rank: int, phase: str = "Running", attempt: int = 0, code: int | None = None, **meta: Any) -> Obj:
    spec = TrainingJobSpec.model_validate({"nodes": 2, "command": ["x"]})
    p = render_pod(ObjectRef("demo", "ml", "u", 1), spec, members(spec)[rank], attempt, "img", "1Gi")
    p["metadata"].update({"uid": f"uid-{rank}-{attempt}", "creationTimestamp": ts(NOW - timedelta(seconds=60)),
                          **meta})
    p["status"] = {"phase": phase}
    if code is not None:
        p["status"]["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {
            "exitCode": code, "reason": "Error", "finishedAt": ts(NOW)}}}]
    return p


def make_pass(spec: Obj | None = None, status: Obj | None = None, pods: list[Obj] | None = None,
              service: bool = True) -> Pass:
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
           "spec": {"nodes": 2, "command": ["x"], **(spec or {})}, "status": status or {}}
    children = {"Pod": pods or [], "Service": [{"kind": "Service"}] if service else []}
    p = Pass(World(job, children, frozenset(), NOW), CFG)
    invalid_spec(p)
    return p


Case = tuple[str, Callable[[Pass], bool], Pass, bool, Callable[[Pass], bool]]
CASES: list[Case] = [
    ("invalid spec fails", invalid_spec, make_pass({"nodes": 0}), True,
     lambda p: p.status["reason"] == "InvalidSpec" and "spec.nodes" in p.conds[0]["message"]),
    ("valid spec passes on", invalid_spec, make_pass(), False, lambda p: p.valid_spec is not None),
    ("running job is not finished", finished, make_pass(), False, lambda p: not p.plan.delete),
    ("succeeded job expires after its TTL", finished, make_pass({"runPolicy": {"ttlSecondsAfterFinished": 10}}, DONE),
     True, lambda p: p.plan.delete_self),
    ("failed job keeps the failed pod", finished,
     make_pass({"runPolicy": {"cleanPodPolicy": "All"}}, FAILED,
               [pod(0, "Failed", code=143), pod(1, "Failed", code=1)]),
     True, lambda p: [c.name for c in p.plan.delete] == ["demo-node-0"]),
    ("suspend deletes pods", suspended,
     make_pass({"runPolicy": {"suspend": True}}, {"state": "Running", "reason": "AllPodsRunning"}, [pod(0)]), True,
     lambda p: (p.status["state"], p.status["reason"]) == ("Suspended", "Suspended") and len(p.plan.delete) == 1),
    ("deadline exceeded", active_deadline,
     make_pass({"runPolicy": {"activeDeadlineSeconds": 5}}, {"startTime": ts(NOW - timedelta(seconds=6))}), True,
     lambda p: p.status["reason"] == "DeadlineExceeded"),
    ("deadline ahead requeues", active_deadline,
     make_pass({"runPolicy": {"activeDeadlineSeconds": 50}}, {"startTime": ts(NOW - timedelta(seconds=6))}), False,
     lambda p: p.plan.requeue_after == pytest.approx(44)),
    ("exit 1 is permanent", failed_or_restarting, make_pass(pods=[pod(0), pod(1, "Failed", code=1)]), True,
     lambda p: p.status["reason"] == "ExitCode" and p.status["lastFailure"]["exitCode"] == 1),
    ("signal restarts the gang", failed_or_restarting, make_pass(pods=[pod(0), pod(1, "Failed", code=137)]), True,
     lambda p: p.status["restartCount"] == 1 and p.status["state"] == "Restarting" and len(p.plan.delete) == 2),
    ("a deleted running pod is a disruption", failed_or_restarting,
     make_pass(pods=[pod(0), pod(1, deletionTimestamp=ts(NOW))]), True, lambda p: p.status["disruptions"] == 1),
    ("backoff limit", failed_or_restarting,
     make_pass({"runPolicy": {"backoffLimit": 1}}, {"restartCount": 1}, [pod(0, attempt=1),
                                                                        pod(1, "Failed", 1, code=200)]), True,
     lambda p: p.status["reason"] == "BackoffLimitExceeded"),
    ("all workers succeeded", succeeded, make_pass(pods=[pod(0, "Succeeded"), pod(1, "Succeeded")]), True,
     lambda p: p.status["state"] == "Succeeded"),
    ("one worker left", succeeded, make_pass(pods=[pod(0, "Succeeded"), pod(1)]), False, lambda p: True),
    ("old attempt goes first", old_attempt_gone, make_pass(None, {"restartCount": 1}, [pod(0, attempt=0)]), True,
     lambda p: [c.name for c in p.plan.delete] == ["demo-node-0"]),
    ("back-off not over", backoff_elapsed,
     make_pass(None, {"restartCount": 1, "lastFailure": {"time": ts(NOW - timedelta(seconds=3))}}), True,
     lambda p: p.plan.requeue_after == pytest.approx(7)),
    ("back-off over", backoff_elapsed,
     make_pass(None, {"restartCount": 1, "lastFailure": {"time": ts(NOW - timedelta(seconds=11))}}), False,
     lambda p: True),
    ("creates what is missing", create_missing, make_pass(pods=[pod(0, "Pending")], service=False), False,
     lambda p: [o["metadata"]["name"] for o in p.plan.create] == ["demo-workers", "demo-node-1"]),
    ("all running", running_or_why_not, make_pass(pods=[pod(0), pod(1)]), True,
     lambda p: p.status["state"] == "Running"),
    ("unschedulable is Pending with the reason", running_or_why_not,
     make_pass(pods=[pod(0), {**pod(1, "Pending"), "status": {"phase": "Pending", "conditions": [
         {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}]}}]), True,
     lambda p: p.status["state"] == "Pending" and p.status["reason"] == "Unschedulable"),
]


@pytest.mark.parametrize(("step", "p", "settles", "check"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_policy_step(step: Callable[[Pass], bool], p: Pass, settles: bool, check: Callable[[Pass], bool]) -> None:
    if p.valid_spec is None and step is not invalid_spec:
        pytest.fail("the case's spec must be valid")
    if step is not invalid_spec:
        assert step(p) is settles
    else:
        assert (p.valid_spec is None) is settles
    assert check(p), p.status


# ---------- the compression stage ----------

COMPRESSING = {"recipe": {"model": "mlp", "dataset": "digits"}, "storage": {
    "persistentVolumeClaim": {"claimName": "data"}, "path": "runs/demo"},
    "compression": {"methods": [{"quantize": {"mode": "dynamic"}}]}}
DIGEST = "sha256:" + "cd" * 32


def compress_pod(phase: str, code: int | None = None, message: str = "") -> Obj:
    spec = TrainingJobSpec.model_validate({"nodes": 2, **COMPRESSING})
    p = render_compression_pod(ObjectRef("demo", "ml", "u", 1), spec, 1, "img", "1Gi")
    p["metadata"].update({"uid": "uid-c", "creationTimestamp": ts(NOW)})
    p["status"] = {"phase": phase}
    if code is not None:
        p["status"]["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error", "finishedAt": ts(NOW),
            "message": message}}}]
    return p


def termination(compressed: bool) -> str:
    artifact = {"path": "compressed/0-quantize-dynamic", "digest": DIGEST, "sizeBytes": 9000}
    reason = "Compressed" if compressed else "AccuracyBudgetExceeded"
    return json.dumps({"compressed": compressed, "reason": reason, "message": f"{reason}: quantize-dynamic",
                       "reportPath": "compressed/report.json", **({"artifact": artifact} if compressed else {})})


def compress_pass(*extra: Obj, status: Obj | None = None) -> Pass:
    return make_pass({**COMPRESSING, "command": None}, status,
                     [pod(0, "Succeeded", code=0), pod(1, "Succeeded", code=0), *extra])


@pytest.mark.parametrize(("extra", "status", "settles", "check"), [
    ([], None, True, lambda p: p.status["state"] == "Compressing"
     and [o["metadata"]["name"] for o in p.plan.create] == ["demo-compress-0"]),
    ([compress_pod("Running")], {"compression": {"attempts": 1}}, True,
     lambda p: p.status["state"] == "Compressing" and not p.plan.create),
    ([compress_pod("Succeeded", 0, termination(True))], {"compression": {"attempts": 1}}, False,
     lambda p: p.conds[-1]["type"] == "Compressed" and p.conds[-1]["status"] == "True"
     and p.status["compression"]["artifact"]["uri"] == "pvc://data/runs/demo/compressed/0-quantize-dynamic"),
    ([compress_pod("Succeeded", 0, termination(False))], {"compression": {"attempts": 1}}, False,
     lambda p: p.conds[-1]["reason"] == "AccuracyBudgetExceeded" and p.conds[-1]["status"] == "False"),
    ([compress_pod("Failed", 137)], {"compression": {"attempts": 1}}, True,
     lambda p: p.status["compression"]["attempts"] == 2 and [c.name for c in p.plan.delete] == ["demo-compress-0"]),
    ([compress_pod("Failed", 1)], {"compression": {"attempts": 1}}, False,
     lambda p: p.conds[-1]["reason"] == "CompressionFailed" and "exited with code 1" in p.conds[-1]["message"]
     and p.status["compression"]["reason"] == "CompressionFailed" and not p.status["compression"]["compressed"]),
    ([compress_pod("Succeeded", 0, "not json")], {"compression": {"attempts": 2}}, False,
     lambda p: p.conds[-1]["reason"] == "CompressionFailed" and p.status["compression"] == {
         "attempts": 2, "compressed": False, "reason": "CompressionFailed",
         "message": "pod demo-compress-0 ended without a readable compression report"}),
], ids=["creates the pod", "waits for it", "accepted", "rejected by the budget", "crash is retried",
        "permanent failure is reported", "an unreadable report is a failure"])
def test_compression_step(extra: list[Obj], status: Obj | None, settles: bool, check: Callable[[Pass], bool]) -> None:
    p = compress_pass(*extra, status=status)
    assert p.valid_spec is not None, p.status
    assert compressing(p) is settles
    assert check(p), p.status


@pytest.mark.parametrize("lie", [
    {"artifact": {"path": "compressed/../../../../etc", "digest": DIGEST, "sizeBytes": 1}},
    {"artifact": {"path": "compressed/0", "digest": "md5:0", "sizeBytes": 1}},
    {"artifact": None},  # "compressed" with nothing published
], ids=["path outside the job's storage", "not a sha256 digest", "compressed without an artifact"])
def test_a_compression_report_is_checked_as_strictly_as_a_training_result(lie: Obj) -> None:
    message = json.dumps({**json.loads(termination(True)), **lie})
    p = compress_pass(compress_pod("Succeeded", 0, message), status={"compression": {"attempts": 1}})
    compressing(p)
    assert p.conds[-1]["reason"] == "CompressionFailed" and "artifact" not in p.status["compression"]


def disrupted(pod: Obj) -> Obj:
    pod["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]
    return pod


def test_a_disrupted_compression_pod_is_retried_without_counting() -> None:
    """At the limit of counted failures, an eviction still gets another try, and is counted apart."""
    at_limit = {"compression": {"attempts": 4}}  # three counted failures: backoffLimit (3) is spent
    p = compress_pass(disrupted(compress_pod("Failed", 137)), status=at_limit)
    assert compressing(p) is True
    assert p.status["compression"]["attempts"] == 5 and p.status["compression"]["disruptions"] == 1
    assert p.status["compression"]["lastFailure"]["pod"] == "demo-compress-0"
    spent = compress_pass(compress_pod("Failed", 137), status=at_limit)
    compressing(spent)
    assert spent.status["compression"]["reason"] == "CompressionFailed"


@pytest.mark.parametrize(("failed_ago", "created"), [(4, False), (10, True)])
def test_the_next_compression_pod_waits_out_the_backoff(failed_ago: int, created: bool) -> None:
    """After one counted failure the next pod waits `backoffSeconds` (10 s here) from the failure."""
    failure = {"pod": "demo-compress-0", "exitCode": 137, "time": ts(NOW - timedelta(seconds=failed_ago))}
    p = compress_pass(status={"compression": {"attempts": 2, "lastFailure": failure}})
    assert compressing(p) is True and p.status["state"] == "Compressing"
    assert bool(p.plan.create) is created
    assert (p.plan.requeue_after == pytest.approx(6)) if not created else p.plan.requeue_after is None


def test_a_compressed_job_ends_succeeded_with_both_artifacts() -> None:
    result = json.dumps({"artifact": {"path": "artifact", "digest": DIGEST, "sizeBytes": 10}})
    pods = [pod(0, "Succeeded", code=0), pod(1, "Succeeded", code=0),
            compress_pod("Succeeded", 0, termination(True))]
    pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = result
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
           "spec": {"nodes": 2, **COMPRESSING}, "status": {"compression": {"attempts": 1}}}
    plan = decide(World(job, {"Pod": pods, "Service": [{"kind": "Service"}]}, frozenset(), NOW), CFG)
    st = plan.status
    assert st["state"] == "Succeeded" and st["artifact"]["uri"] == "pvc://data/runs/demo/artifact"
    assert st["compression"]["artifact"]["digest"] == DIGEST
    assert {c["type"]: c["status"] for c in st["conditions"]}["Compressed"] == "True"


def test_spec_verdict_is_reused_only_while_the_spec_is_unchanged() -> None:
    from kubeforge_operator.trainingjob.validate import _Validated

    check = _Validated(size=2)
    job: Obj = {"metadata": {"uid": "u", "generation": 1}, "spec": {"nodes": 2, "command": ["x"]}}
    spec, errors = check(job)
    assert spec is not None and not errors
    assert check(job)[0] is spec  # the same generation and spec: validated once
    job["spec"]["nodes"] = 0  # the same key with another spec (never from the API server): validated again
    assert check(job)[0] is None and "spec.nodes" in check(job)[1]
    for uid in ("a", "b", "c"):
        check({"metadata": {"uid": uid, "generation": 1}, "spec": {"nodes": 1, "command": ["x"]}})
    assert len(check.entries) == 2  # bounded


def test_an_attempt_that_resumed_from_a_checkpoint_says_so_once() -> None:
    doc = ProgressDoc.model_validate({"step": 31, "totalSteps": 90, "attempt": 1, "resumedFrom": 30,
                                      "lastCheckpointStep": 30, "phase": "training"})
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
           "spec": {"nodes": 1, "command": ["x"]}, "status": {"restartCount": 1}}
    p = Pass(World(job, {}, frozenset(), NOW, doc), CFG)
    invalid_spec(p)
    record_progress(p)
    assert p.status["resumedFrom"] == {"attempt": 1, "step": 30}
    assert [(e.reason, e.message) for e in p.plan.events] == [("Resumed", "attempt 1 resumed from the checkpoint "
                                                                          "at step 30")]
    again = Pass(World({**job, "status": p.status}, {}, frozenset(), NOW, doc), CFG)
    invalid_spec(again)
    record_progress(again)
    assert not again.plan.events
