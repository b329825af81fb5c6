"""The ServingJob policy, pass by pass: what a ServingJob and its children lead to (status, the
children created, updated or deleted, the Events), and the core's child diffing and Event rule
that both kinds share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubeforge_api.server_settings import EXIT_MODEL_NOT_FOUND
from kubeforge_operator.children import diff_children
from kubeforge_operator.plan import Plan, Refusal, World
from kubeforge_operator.servingjob.context import Config
from kubeforge_operator.servingjob.decide import decide
from kubeforge_operator.transitions import EventRule, condition_events

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config("img")
SUCCEEDED = {"conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed"}],
             "artifact": {"uri": "pvc://models/runs/digits/artifact", "digest": "sha256:" + "ab" * 32}}


def serving(spec: Obj | None = None, status: Obj | None = None) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob",
            "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": {"model": {"uri": "pvc://models/m"}, **(spec or {})}, "status": status or {}}


def conditions(plan: Plan) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in plan.status.get("conditions") or []}


def created(plan: Plan) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in plan.create)


def observed(plan: Plan, deployment_status: Obj | None = None) -> dict[str, list[Obj]]:
    """The children a first pass created, as the watch would show them (with a uid and a status)."""
    out: dict[str, list[Obj]] = {}
    for obj in plan.create:
        seen = {**obj, "metadata": {**obj["metadata"], "uid": f"uid-{obj['metadata']['name']}"}}
        if obj["kind"] == "Deployment":
            seen["status"] = deployment_status or {}
        out.setdefault(obj["kind"], []).append(seen)
    return out


def test_a_uri_model_rolls_out_every_child_then_a_settled_world_writes_nothing() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    assert created(first) == [("Deployment", "demo"), ("PodDisruptionBudget", "demo"), ("Service", "demo")]
    assert conditions(first)["Ready"] == ("False", "ModelLoading")
    assert first.status["url"] == "http://demo.ml.svc.cluster.local"
    ready = {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    job = serving(status=first.status)
    again = decide(World(job, observed(first, ready), frozenset(), NOW), CFG)
    assert not again.create and not again.update and not again.delete
    assert conditions(again)["Ready"] == ("True", "ModelLoaded")
    assert [(e.type, e.reason) for e in again.events] == [("Normal", "ModelLoaded")]
    settled = decide(World(serving(status=again.status), observed(first, ready), frozenset(), NOW), CFG)
    assert settled.status == again.status and not settled.events


def test_a_changed_spec_updates_only_the_children_whose_rendered_form_changed() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    plan = decide(World(serving({"replicas": 3}), observed(first), frozenset(), NOW), CFG)
    assert [(o["kind"], o["spec"]["replicas"]) for o in plan.update] == [("Deployment", 3)]
    assert not plan.create and not plan.delete


def test_children_created_but_not_yet_seen_are_not_created_again() -> None:
    expected = frozenset({("Deployment", "demo"), ("Service", "demo"), ("PodDisruptionBudget", "demo")})
    assert not decide(World(serving(), {}, expected, NOW), CFG).create


def test_waiting_for_the_training_job_keeps_what_serves_and_creates_no_deployment() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    spec = {"model": {"trainingJobRef": {"name": "digits"}}}
    world = World(serving(spec), observed(first), frozenset(), NOW, probe={"digits": None})
    plan = decide(world, CFG)
    assert conditions(plan)["Ready"] == ("False", "ModelNotReady")
    assert not plan.delete and not plan.create  # the Deployment that serves stays
    assert plan.requeue_after is not None


def test_a_training_jobs_artifact_is_served_with_its_lineage() -> None:
    spec = {"model": {"trainingJobRef": {"name": "digits", "variant": "original"}}}
    plan = decide(World(serving(spec), {}, frozenset(), NOW, probe={"digits": {"status": SUCCEEDED}}), CFG)
    target = plan.status["targetModel"]  # rolling out: nothing serves it yet
    assert target["trainingJob"] == "digits" and target["uri"].endswith("/artifact") and "model" not in plan.status
    assert ("Deployment", "demo") in created(plan)


def test_a_server_that_cannot_find_its_model_is_one_warning_not_two_events() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    children = observed(first)
    children["Pod"] = [{"kind": "Pod", "metadata": {"name": "demo-abc", "uid": "p"}, "status": {
        "containerStatuses": [{"name": "server", "lastState": {"terminated": {
            "exitCode": EXIT_MODEL_NOT_FOUND, "message": "pvc://models/m: no model-card.json"}}}]}}]
    plan = decide(World(serving(status=first.status), children, frozenset(), NOW), CFG)
    assert conditions(plan)["Ready"] == ("False", "ModelNotFound")
    assert conditions(plan)["Degraded"] == ("True", "ModelNotFound")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "ModelNotFound")]


def test_a_canary_whose_model_does_not_resolve_degrades_but_the_main_track_serves() -> None:
    spec = {"canary": {"model": {"trainingJobRef": {"name": "next"}}, "trafficPercent": 10}}
    first = decide(World(serving(spec), {}, frozenset(), NOW, probe={"next": None}), CFG)
    assert ("Deployment", "demo-canary") not in created(first)
    assert conditions(first)["Degraded"][0] == "True"
    assert first.status["canary"]["trafficPercent"] == 10 and "model" not in first.status["canary"]


def test_an_invalid_spec_rolls_nothing_out_and_names_the_field() -> None:
    plan = decide(World(serving({"replicas": -1}), {}, frozenset(), NOW), CFG)
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec") and "spec.replicas" in ready["message"]
    assert not plan.create and [e.type for e in plan.events] == ["Warning"]


# ---------- the core's pieces both kinds use ----------

def test_diff_deletes_unwanted_children_but_never_the_kinds_it_keeps() -> None:
    dep = {"kind": "Deployment", "metadata": {"name": "old", "uid": "d"}}
    svc = {"kind": "Service", "metadata": {"name": "old", "uid": "s"}}
    world = World({}, {"Deployment": [dep], "Service": [svc]}, frozenset(), NOW)
    plan = Plan({})
    diff_children(plan, world, [], ("Deployment", "Service"), keep=frozenset({"Deployment"}))
    assert [(c.kind, c.name, c.uid) for c in plan.delete] == [("Service", "old", "s")]


RULE = EventRule(warning_reasons=frozenset({"Bad"}), trouble=frozenset({"Failed"}))


def cond(ctype: str, status: str, reason: str, message: str = "m") -> Obj:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(("old", "new", "events"), [
    ([], [cond("Running", "True", "Go")], [("Normal", "Go")]),
    ([cond("Running", "True", "Go")], [cond("Running", "True", "Go")], []),
    ([cond("Running", "True", "Go")], [cond("Running", "False", "Quiet")], []),
    ([], [cond("Running", "False", "Bad")], [("Warning", "Bad")]),
    ([], [cond("Failed", "True", "Exit")], [("Warning", "Exit")]),
    ([], [cond("Failed", "True", "Exit", "x"), cond("Running", "False", "Exit", "x")], [("Warning", "Exit")]),
], ids=["new and true", "unchanged", "turned false for an ordinary reason", "a warning reason",
        "trouble", "the same news on two conditions"])
def test_one_rule_turns_condition_changes_into_events(old: list[Obj], new: list[Obj],
                                                       events: list[tuple[str, str]]) -> None:
    found = condition_events({"conditions": old}, {"conditions": new}, RULE)
    assert [(e.type, e.reason) for e in found] == events


# ---------- status that matches reality ----------

def pending_pod(message: str) -> Obj:
    return {"kind": "Pod", "metadata": {"name": "demo-abc", "uid": "p", "labels": {"kubeforge.dev/track": "main"}},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}}


def test_servers_that_cannot_be_scheduled_are_not_ready_and_say_why() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    children = observed(first)
    children["Pod"] = [pending_pod('persistentvolumeclaim "modelz" not found')]
    plan = decide(World(serving(status=first.status), children, frozenset(), NOW), CFG)
    assert conditions(plan)["Ready"] == ("False", "Unschedulable")
    assert conditions(plan)["Degraded"] == ("True", "Unschedulable")
    assert "modelz" in plan.status["conditions"][0]["message"]


def oom_killed_pod() -> Obj:
    return {"kind": "Pod", "metadata": {"name": "demo-abc", "uid": "p", "labels": {"kubeforge.dev/track": "main"}},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "server", "ready": False, "restartCount": 1,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}}


def replica_failure(message: str) -> Obj:
    return {"replicas": 0, "conditions": [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                           "message": message}]}


def test_servers_out_of_memory_or_refused_by_a_quota_are_not_ready_and_say_why_not_model_loading() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    children = observed(first)
    children["Pod"] = [oom_killed_pod()]
    oom = decide(World(serving(status=first.status), children, frozenset(), NOW), CFG)
    assert conditions(oom)["Ready"] == ("False", "OOMKilled")
    assert "spec.resources.limits.memory" in next(c["message"] for c in oom.status["conditions"]
                                                  if c["type"] == "Ready")
    quota = 'pods "demo-abc" is forbidden: exceeded quota: compute, requested: cpu=1, used: cpu=4, limited: cpu=4'
    refused = observed(first, replica_failure(quota))
    plan = decide(World(serving(status=first.status), refused, frozenset(), NOW), CFG)
    assert conditions(plan)["Ready"][1] == "FailedCreate" and conditions(plan)["Degraded"] == ("True", "FailedCreate")
    assert "exceeded quota" in next(c["message"] for c in plan.status["conditions"] if c["type"] == "Ready")


def test_during_a_broken_rollout_the_status_names_the_model_still_served() -> None:
    old = {"uri": "pvc://models/old"}
    ready = {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 1, "observedGeneration": 2}
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)  # rendered for pvc://models/m
    children = observed(first, ready)
    children["Deployment"][0]["metadata"] |= {"generation": 2, "annotations": {"kubeforge.dev/spec-hash": "older"}}
    plan = decide(World(serving(status={"model": old}), children, frozenset(), NOW), CFG)
    assert plan.status["model"] == old and plan.status["targetModel"] == {"uri": "pvc://models/m"}
    assert conditions(plan)["Ready"][0] == "True"


def server_that_found_no_model() -> Obj:
    """A main-track server pod whose last run exited: no model card under its mount."""
    return {"kind": "Pod", "metadata": {"name": "demo-abc", "uid": "p", "labels": {"kubeforge.dev/track": "main"}},
            "status": {"containerStatuses": [{"name": "server", "lastState": {"terminated": {
                "exitCode": EXIT_MODEL_NOT_FOUND, "message": "/kubeforge/model: no readable model-card.json"}}}]}}


def test_a_model_not_found_names_the_users_uri_not_the_container_path() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    children = observed(first)
    children["Pod"] = [server_that_found_no_model()]
    plan = decide(World(serving(status=first.status), children, frozenset(), NOW), CFG)
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["message"].startswith("pod demo-abc: pvc://models/m: no readable model-card.json")


def test_ready_is_never_true_behind_a_service_that_is_not_the_servingjobs_own() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    children = observed(first, {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1})
    del children["Service"]
    conflict = Refusal("Service", "demo", "NameConflict", "Service demo already exists and is not owned by this "
                                                          "ServingJob")
    plan = decide(World(serving(status=first.status), children, frozenset(), NOW, refusals=(conflict,)), CFG)
    assert conditions(plan)["Ready"] == ("False", "NameConflict")
    assert conditions(plan)["Degraded"] == ("True", "NameConflict")


def test_a_compressed_variant_that_was_never_published_names_the_fix() -> None:
    spec = {"model": {"trainingJobRef": {"name": "digits", "variant": "compressed"}}}
    plan = decide(World(serving(spec), {}, frozenset(), NOW, probe={"digits": {"status": SUCCEEDED}}), CFG)
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ModelNotFound" and "variant: best" in ready["message"]


def test_a_hostile_artifact_in_a_training_jobs_status_is_not_found_not_a_crash() -> None:
    evil = {**SUCCEEDED, "artifact": {"uri": "pvc://models/runs/x/../../../../etc", "digest": "md5:1"}}
    spec = {"model": {"trainingJobRef": {"name": "digits", "variant": "original"}}}
    plan = decide(World(serving(spec), {}, frozenset(), NOW, probe={"digits": {"status": evil}}), CFG)
    assert conditions(plan)["Ready"] == ("False", "ModelNotFound")
    assert not [o for o in plan.create if o["kind"] == "Deployment"]


def test_the_disruption_budget_never_blocks_evicting_servers_that_never_became_ready() -> None:
    pdb = next(o for o in decide(World(serving(), {}, frozenset(), NOW), CFG).create
               if o["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_servers_are_told_the_digest_the_operator_resolved() -> None:
    digest = SUCCEEDED["artifact"]["digest"]
    spec = {"model": {"trainingJobRef": {"name": "digits", "variant": "original"}}}
    plan = decide(World(serving(spec), {}, frozenset(), NOW, probe={"digits": {"status": SUCCEEDED}}), CFG)
    [dep] = [o for o in plan.create if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KUBEFORGE_MODEL_DIGEST"] == digest


def test_servers_that_cannot_find_the_model_before_any_served_are_stopped_not_crash_looping() -> None:
    first = decide(World(serving(), {}, frozenset(), NOW), CFG)
    children = observed(first)
    children["Pod"] = [server_that_found_no_model()]
    plan = decide(World(serving(status=first.status), children, frozenset(), NOW), CFG)
    assert [(o["kind"], o["spec"]["replicas"]) for o in plan.update] == [("Deployment", 0)]
    assert plan.status["stopped"]["reason"] == "ModelNotFound" and conditions(plan)["Ready"] == ("False",
                                                                                                 "ModelNotFound")
    del children["Pod"]  # scaled to 0: the evidence is gone, the status keeps it
    later = decide(World(serving(status=plan.status), children, frozenset(), NOW), CFG)
    assert later.status["stopped"] == plan.status["stopped"] and "stopped until the spec changes" in \
        next(c for c in later.status["conditions"] if c["type"] == "Ready")["message"]
    fixed = serving({"model": {"uri": "pvc://models/fixed"}}, status=plan.status)
    fixed["metadata"]["generation"] = 2
    again = decide(World(fixed, children, frozenset(), NOW), CFG)
    assert "stopped" not in again.status and again.update[0]["spec"]["replicas"] == 1


# ---------- models in an object store ----------

S3_SPEC = {"model": {"uri": "s3://models/digits", "secretRef": {"name": "creds"}}}
PUBLISHED = {"conditions": SUCCEEDED["conditions"], "artifact": {
    "uri": "emptydir://ml/digits/artifact", "digest": "sha256:" + "cd" * 32, "format": "kubeforge",
    "sizeBytes": 4 * 1024 * 1024, "publishedUri": "s3://models/runs/digits/artifact"}}


def pod_spec(plan: Plan) -> Obj:
    [dep] = [o for o in plan.create if o["kind"] == "Deployment"]
    spec: Obj = dep["spec"]["template"]["spec"]
    return spec


def test_an_s3_model_is_copied_by_an_init_container_that_alone_sees_the_secret() -> None:
    spec = pod_spec(decide(World(serving(S3_SPEC), {}, frozenset(), NOW), CFG))
    [init], [server] = spec["initContainers"], spec["containers"]
    assert init["name"] == "storage-initializer" and init["image"] == server["image"] == "img"
    assert init["command"] == ["python", "-m", "kubeforge_trainer.storage"]
    assert init["args"][:8] == ["fetch", "--uri", "s3://models/digits", "--dest", "/kubeforge/model",
                                "--secret-name", "creds", "--clean"] and "--digest" not in init["args"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"]}
    assert refs == {"AWS_ACCESS_KEY_ID": {"name": "creds", "key": "AWS_ACCESS_KEY_ID"},
                    "AWS_SECRET_ACCESS_KEY": {"name": "creds", "key": "AWS_SECRET_ACCESS_KEY"},
                    "AWS_ENDPOINT_URL": {"name": "creds", "key": "AWS_ENDPOINT_URL", "optional": True},
                    "AWS_REGION": {"name": "creds", "key": "AWS_REGION", "optional": True}}
    assert not [e for e in server["env"] if "valueFrom" in e or e["name"].startswith("AWS_")]
    assert "envFrom" not in server and "envFrom" not in init
    assert init["securityContext"]["readOnlyRootFilesystem"] and init["securityContext"]["capabilities"] == {
        "drop": ["ALL"]} and init["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model"] == {"name": "model", "emptyDir": {}}  # no size known: no limit guessed
    assert server["volumeMounts"][0] == {"name": "model", "mountPath": "/kubeforge/model", "readOnly": True}
    assert {"name": "model", "mountPath": "/kubeforge/model"} in init["volumeMounts"]


def test_a_claim_model_has_no_init_container_and_mounts_its_path() -> None:
    spec = pod_spec(decide(World(serving(), {}, frozenset(), NOW), CFG))
    assert "initContainers" not in spec and spec["containers"][0]["volumeMounts"][0]["subPath"] == "m"
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in spec["volumes"]


def test_a_training_jobs_published_copy_is_served_with_its_output_secret_and_verified() -> None:
    job = {"spec": {"output": {"uri": "s3://models/runs", "secretRef": {"name": "out-creds"}}}, "status": PUBLISHED}
    ref = {"model": {"trainingJobRef": {"name": "digits", "variant": "original"}}}
    plan = decide(World(serving(ref), {}, frozenset(), NOW, probe={"digits": job}), CFG)
    target = plan.status["targetModel"]
    assert target["uri"] == "s3://models/runs/digits/artifact" and target["secretRef"] == {"name": "out-creds"}
    assert target["format"] == "kubeforge" and target["digest"] == PUBLISHED["artifact"]["digest"]
    spec = pod_spec(plan)
    args = spec["initContainers"][0]["args"]
    assert args[args.index("--digest") + 1] == PUBLISHED["artifact"]["digest"]
    limit = int(args[args.index("--max-bytes") + 1])
    assert limit >= 4 * 1024 * 1024 and int(spec["volumes"][0]["emptyDir"]["sizeLimit"]) > limit
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in spec["initContainers"][0]["env"]} == {"out-creds"}


def test_a_training_jobs_artifact_on_a_claim_is_served_from_the_claim_even_when_published() -> None:
    status = {**PUBLISHED, "artifact": {**PUBLISHED["artifact"], "uri": "pvc://models/runs/digits/artifact"}}
    job = {"spec": {"output": {"uri": "s3://models/runs", "secretRef": {"name": "out-creds"}}}, "status": status}
    ref = {"model": {"trainingJobRef": {"name": "digits"}}}
    plan = decide(World(serving(ref), {}, frozenset(), NOW, probe={"digits": job}), CFG)
    assert plan.status["targetModel"]["uri"].startswith("pvc://") and "initContainers" not in pod_spec(plan)
    assert plan.status["targetModel"]["format"] == "kubeforge"


@pytest.mark.parametrize(("artifact", "why"), [
    ({"uri": "emptydir://ml/digits/artifact"}, "was not published: give the job spec.storage or spec.output"),
    ({"uri": "emptydir://ml/digits/artifact", "publishedUri": "s3://models/x/../../etc"}, "cannot be served"),
], ids=["not published", "hostile published uri"])
def test_an_artifact_that_lived_only_in_the_pods_names_the_fix(artifact: Obj, why: str) -> None:
    job = {"spec": {"output": {"uri": "s3://models/runs", "secretRef": {"name": "c"}}},
           "status": {**SUCCEEDED, "artifact": artifact}}
    plan = decide(World(serving({"model": {"trainingJobRef": {"name": "digits"}}}), {}, frozenset(), NOW,
                        probe={"digits": job}), CFG)
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ModelNotFound" and why in ready["message"]


def initializer_exited(code: int, message: str) -> Obj:
    """A main-track server pod whose storage initializer exited (and now waits to be retried)."""
    return {"kind": "Pod", "metadata": {"name": "demo-abc", "uid": "p", "labels": {"kubeforge.dev/track": "main"}},
            "status": {"phase": "Pending", "initContainerStatuses": [{
                "name": "storage-initializer", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": code, "message": message + "\n"}}}],
                "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "PodInitializing"}}}]}}


@pytest.mark.parametrize(("code", "line", "reason", "stops"), [
    (66, "s3://models/digits: no such object", "ModelNotFound", True),
    (77, "s3://models/digits: the credentials in Secret creds were refused (InvalidAccessKeyId)",
     "StorageAccessDenied", True),
    (65, "s3://models/digits: the copy's digest is sha256:00, not the recorded sha256:11", "ModelLoadFailed", True),
    (69, "s3://models/digits: cannot reach the object store at http://s3:9000 (EndpointConnectionError)",
     "StorageUnavailable", False),
], ids=["not found", "access denied", "corrupt", "unavailable"])
def test_an_initializer_that_cannot_copy_the_model_says_why_in_the_users_terms(code: int, line: str, reason: str,
                                                                               stops: bool) -> None:
    first = decide(World(serving(S3_SPEC), {}, frozenset(), NOW), CFG)
    children = observed(first)
    children["Pod"] = [initializer_exited(code, line)]
    plan = decide(World(serving(S3_SPEC, status=first.status), children, frozenset(), NOW), CFG)
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], conditions(plan)["Degraded"]) == (reason, ("True", reason))
    assert ready["message"].startswith(f"pod demo-abc: {line}") and "\n" not in ready["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", reason)]
    assert ("stopped" in plan.status) is stops  # an unreachable store may come back: keep retrying
    assert [o["spec"]["replicas"] for o in plan.update] == ([0] if stops else [])


def test_a_missing_credentials_secret_is_said_in_one_line() -> None:
    first = decide(World(serving(S3_SPEC), {}, frozenset(), NOW), CFG)
    children = observed(first)
    children["Pod"] = [{"kind": "Pod", "metadata": {"name": "demo-abc", "uid": "p",
                                                    "labels": {"kubeforge.dev/track": "main"}},
                        "status": {"phase": "Pending", "initContainerStatuses": [{
                            "name": "storage-initializer", "state": {"waiting": {
                                "reason": "CreateContainerConfigError", "message": 'secret "creds" not found'}}}]}}]
    plan = decide(World(serving(S3_SPEC, status=first.status), children, frozenset(), NOW), CFG)
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("CreateContainerConfigError", "pod demo-abc: Secret creds not found")
    assert "stopped" not in plan.status  # creating the Secret lets the pod start: nothing to stop
