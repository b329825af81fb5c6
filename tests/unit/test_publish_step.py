"""The publish stage of a TrainingJob with spec.output: one pod after training (and compression)
copies the artifacts to the object store with the Secret's keys (only it gets them); Published says
where they went or why not; the job succeeds either way and keeps where the copies are."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_operator.plan import ObjectRef, World, ts
from kubeforge_operator.render.trainingjob import members, render_pod, render_publish_pod
from kubeforge_operator.trainingjob.context import Config
from kubeforge_operator.trainingjob.decide import decide

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CFG = Config(default_image="kubeforge/trainer:test")
DIGEST = "sha256:" + "ab" * 32
SPEC: Obj = {"nodes": 1, "command": ["python", "train.py"],
             "storage": {"persistentVolumeClaim": {"claimName": "data"}, "path": "runs/demo"},
             "output": {"uri": "s3://models/demo", "secretRef": {"name": "s3-keys"}}}
REF = ObjectRef("demo", "ml", "u", 1)


def terminated(p: Obj, phase: str, code: int, message: str = "", **status: Any) -> Obj:
    p["metadata"].update({"uid": f"uid-{p['metadata']['name']}", "creationTimestamp": ts(NOW - timedelta(seconds=9))})
    p["status"] = {"phase": phase, **status, "containerStatuses": [{"name": "trainer", "state": {"terminated": {
        "exitCode": code, "reason": "Completed" if code == 0 else "Error", "finishedAt": ts(NOW),
        "message": message}}}]}
    return p


def worker() -> Obj:
    spec = TrainingJobSpec.model_validate(SPEC)
    result = {"artifact": {"path": "artifact", "digest": DIGEST, "sizeBytes": 10, "format": "hf-transformers"}}
    return terminated(render_pod(REF, spec, members(spec)[0], 0, "img", "1Gi"), "Succeeded", 0, json.dumps(result))


def publisher(phase: str, code: int, message: str = "", **status: Any) -> Obj:
    spec = TrainingJobSpec.model_validate(SPEC)
    return terminated(render_publish_pod(REF, spec, 0, "img", "1Gi", None), phase, code, message, **status)


def run(*pods: Obj, status: Obj | None = None) -> Obj:
    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
           "spec": SPEC, "status": status or {}}
    plan = decide(World(job, {"Pod": list(pods), "Service": [{"kind": "Service"}]}, frozenset(), NOW), CFG)
    return {"status": plan.status, "create": plan.create, "delete": [d.name for d in plan.delete]}


def conditions(status: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_trained_then_published_then_succeeded() -> None:
    first = run(worker())
    assert first["status"]["state"] == "Publishing"
    (pod,) = first["create"]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "kubeforge_trainer.publish", "--storage", "/kubeforge/storage",
                                     "--uri", "s3://models/demo", "--secret-name", "s3-keys"]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(keys) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"}
    assert all(k["name"] == "s3-keys" for k in keys.values()) and keys["AWS_REGION"]["optional"] is True
    done = run(worker(), publisher("Succeeded", 0, json.dumps({"artifact": "s3://models/demo/artifact"})),
               status=first["status"])
    st = done["status"]
    assert st["state"] == "Succeeded" and conditions(st)["Published"] == ("True", "Published")
    assert st["artifact"] == {"uri": "pvc://data/runs/demo/artifact", "digest": DIGEST, "sizeBytes": 10,
                              "format": "hf-transformers", "publishedUri": "s3://models/demo/artifact"}


def test_the_secret_reaches_only_the_publish_pod() -> None:
    envs = [e for c in worker()["spec"]["containers"] for e in c["env"]]
    assert not [e for e in envs if "secretKeyRef" in (e.get("valueFrom") or {})]


def test_refused_credentials_are_reported_and_the_job_still_succeeds() -> None:
    line = "s3://models/demo/artifact: the credentials in Secret s3-keys were refused (InvalidAccessKeyId)"
    st = run(worker(), publisher("Failed", 77, line))["status"]
    assert st["state"] == "Succeeded" and conditions(st)["Published"] == ("False", "PublishFailed")
    message = next(c["message"] for c in st["conditions"] if c["type"] == "Published")
    assert message.endswith(line) and "publishedUri" not in st["artifact"]


def test_a_missing_secret_is_reported_and_the_pod_removed() -> None:
    waiting = publisher("Pending", 0)
    waiting["status"] = {"phase": "Pending", "containerStatuses": [{"name": "trainer", "state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "s3-keys" not found'}}}]}
    out = run(worker(), waiting)
    assert conditions(out["status"])["Published"] == ("False", "PublishFailed")
    assert out["status"]["state"] == "Succeeded" and out["delete"] == ["demo-publish-0"]


def test_a_disrupted_publish_pod_is_recreated() -> None:
    evicted = publisher("Failed", 137, conditions=[{"type": "DisruptionTarget", "status": "True"}])
    out = run(worker(), evicted)
    assert out["status"]["state"] == "Publishing" and out["delete"] == ["demo-publish-0"]


def test_a_publish_pod_that_says_nothing_readable_is_a_failure() -> None:
    st = run(worker(), publisher("Succeeded", 0, "uploaded!"))["status"]
    assert conditions(st)["Published"] == ("False", "PublishFailed") and st["state"] == "Succeeded"


def test_a_fine_tune_records_the_merged_model_the_adapter_and_the_evaluation() -> None:
    from kubeforge_api.contracts import TrainingResult
    from kubeforge_operator.trainingjob.context import Pass
    from kubeforge_operator.trainingjob.success import record_result
    from kubeforge_operator.trainingjob.validate import invalid_spec

    job = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "demo", "namespace": "ml", "uid": "u", "generation": 1},
           "spec": {"finetune": {"model": {"uri": "pvc://models/base"}, "data": {"uri": "pvc://data/chat.jsonl"}},
                    "storage": SPEC["storage"]}}
    p = Pass(World(job, {}, frozenset(), NOW), CFG)
    assert invalid_spec(p) is False
    artifact = {"path": "artifact", "digest": DIGEST, "sizeBytes": 10, "format": "hf-transformers"}
    record_result(p, TrainingResult.model_validate({
        "artifact": artifact, "adapterArtifact": {**artifact, "path": "adapter"},
        "evaluation": {"before": {"loss": 3.2, "perplexity": 24.5}, "after": {"loss": 2.1, "perplexity": 8.2},
                       "trainableFraction": 0.011, "tokensPerSecond": 900.0}}))
    assert p.status["adapterArtifact"]["uri"] == "pvc://data/runs/demo/adapter"
    assert p.status["evaluation"]["after"] == {"loss": 2.1, "perplexity": 8.2}
