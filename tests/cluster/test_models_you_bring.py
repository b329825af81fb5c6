"""Models users bring, end to end on the real control plane with the embedded object store: a
command job's script saves a Hugging Face classifier to $KUBEFORGE_OUTPUT_DIR, the job records it
(format, digest), publishes it to S3, and ServingJobs serve it from the job's claim (trainingJobRef,
with lineage) and from the published s3:// copy, answering what `transformers` answers in-process; a
torch.export program is served from a claim; a directory that is not a model, one whose only
weights are a pickle, and a corrupt safetensors header are each refused in one line, the planted
pickle never running, and no credential shows anywhere."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import REPO, Cluster, ObjectStore, condition, wait_for
from minicluster.operator_process import OperatorProcess
from test_servingjob import claim_dir, get, server_ips
from test_servingjob_s3 import secret

pytestmark = [pytest.mark.cluster, pytest.mark.embedded("its pods import the test model builders from this checkout")]
Obj = dict[str, Any]
TEXTS = ["a lovely calm day", "an awful grim room", "the song was fine", "rude and broken"]
SAVE = ("import os, pathlib, sys; sys.path.insert(0, {tests!r}); from hf_models import tiny_bert_classifier; "
        "tiny_bert_classifier(pathlib.Path(os.environ['KUBEFORGE_OUTPUT_DIR']))")


def create(cluster: Cluster, ns: str, plural: str, doc: Obj) -> None:
    cluster.client.create(f"/apis/kubeforge.dev/v1alpha1/namespaces/{ns}/{plural}",
                          {"apiVersion": "kubeforge.dev/v1alpha1", **doc})


def claim(cluster: Cluster, ns: str, name: str) -> Path:
    cluster.client.create(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
        "metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteMany"],
                                             "resources": {"requests": {"storage": "1Gi"}}}})
    wait_for(lambda: cluster.client.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}")
             .get("spec", {}).get("volumeName"), 60, what="the claim to bind")
    return claim_dir(cluster, ns, name)


def serve(cluster: Cluster, ns: str, name: str, model: Obj) -> None:
    create(cluster, ns, "servingjobs", {"kind": "ServingJob", "metadata": {"name": name}, "spec": {
        "model": model, "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}})


def ready(cluster: Cluster, ns: str, name: str, timeout: float = 300) -> Obj:
    def check() -> Obj | None:
        sj = get(cluster, ns, "servingjobs", name)
        return sj if (condition(sj, "Ready") or {}).get("status") == "True" else None
    try:
        return dict(wait_for(check, timeout, what=f"{name} to be Ready"))
    except AssertionError as e:
        raise AssertionError(f"{e}: {get(cluster, ns, 'servingjobs', name).get('status')}") from None


def ready_ips(cluster: Cluster, ns: str, name: str) -> list[str]:
    pods = cluster.client.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=kubeforge.dev%2Fserving-name%3D{name}")
    ips = {p["status"].get("podIP") for p in pods["items"]}
    return [ip for ip in server_ips(cluster, ns) if ip in ips]


def post(ip: str, name: str, body: Obj) -> Obj:
    req = urllib.request.Request(f"http://{ip}:8080/v2/models/{name}/infer", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return dict(json.loads(r.read()))


def classify(ip: str, name: str) -> tuple[torch.Tensor, list[str]]:
    out = {o["name"]: o for o in post(ip, name, {"inputs": [
        {"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES", "data": TEXTS}]})["outputs"]}
    return torch.tensor(out["logits"]["data"]).reshape(len(TEXTS), -1), list(out["label"]["data"])


def in_process(directory: Path) -> tuple[torch.Tensor, list[str]]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()
    with torch.inference_mode():
        logits = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits
    return logits, [model.config.id2label[int(i)] for i in logits.argmax(-1)]


def test_a_command_jobs_hugging_face_model_is_recorded_published_and_served_from_claim_and_s3(
        cluster: Cluster, operator: OperatorProcess, namespace: str, object_store: ObjectStore) -> None:
    root = claim(cluster, namespace, "models")
    secret(cluster, namespace, "s3-credentials", object_store)
    bucket = f"kf-{namespace}"
    create(cluster, namespace, "trainingjobs", {"kind": "TrainingJob", "metadata": {"name": "bert"}, "spec": {
        "command": [sys.executable, "-c", SAVE.format(tests=str(REPO / "tests"))],
        "storage": {"persistentVolumeClaim": {"claimName": "models"}, "path": "runs/bert"},
        "output": {"uri": f"s3://{bucket}/bert", "secretRef": {"name": "s3-credentials"}},
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "2Gi"}}}})
    tj = wait_for(lambda: (j := get(cluster, namespace, "trainingjobs", "bert")).get("status", {}).get("state")
                  in ("Succeeded", "Failed") and j, 300, what="the job to finish")
    st = tj["status"]
    assert st["state"] == "Succeeded", st
    artifact = st["artifact"]
    assert artifact["format"] == "hf-transformers" and artifact["uri"] == "pvc://models/runs/bert/artifact"
    assert artifact["publishedUri"] == f"s3://{bucket}/bert/artifact", st
    assert (condition(tj, "Published") or {}).get("status") == "True"
    expected_logits, expected_labels = in_process(root / "runs" / "bert" / "artifact")

    serve(cluster, namespace, "bert-claim", {"trainingJobRef": {"name": "bert", "variant": "original"}})
    serve(cluster, namespace, "bert-s3", {"uri": artifact["publishedUri"], "secretRef": {"name": "s3-credentials"}})
    for name in ("bert-claim", "bert-s3"):
        sj = ready(cluster, namespace, name)
        (ip,) = ready_ips(cluster, namespace, name)
        logits, labels = classify(ip, name)
        assert torch.allclose(logits, expected_logits, atol=1e-4) and labels == expected_labels, name
        assert sj["status"]["model"].get("format") in (None, "hf-transformers")
    lineage = get(cluster, namespace, "servingjobs", "bert-claim")["status"]["model"]
    assert lineage["trainingJob"] == "bert" and lineage["digest"] == artifact["digest"], lineage
    assert object_store.secret_key not in json.dumps([tj, get(cluster, namespace, "servingjobs", "bert-s3")])


def test_a_torch_export_program_is_served_with_its_own_signature(cluster: Cluster, operator: OperatorProcess,
                                                                   namespace: str) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from hf_models import exported_mlp

    root = claim(cluster, namespace, "programs")
    directory = exported_mlp(root / "mlp")
    serve(cluster, namespace, "program", {"uri": "pvc://programs/mlp"})
    ready(cluster, namespace, "program")
    (ip,) = ready_ips(cluster, namespace, "program")
    meta_req = urllib.request.Request(f"http://{ip}:8080/v2/models/program")
    with urllib.request.urlopen(meta_req, timeout=10) as r:
        meta = json.loads(r.read())
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert set(inputs) == {"features", "mask"} and inputs["features"]["shape"][0] == -1, meta
    program = torch.export.load(str(directory / "model.pt2")).module()
    features = torch.randn(3, inputs["features"]["shape"][1])
    mask = torch.ones(3, inputs["mask"]["shape"][1], dtype=torch.int64)
    out = post(ip, "program", {"inputs": [
        {"name": "features", "shape": list(features.shape), "datatype": "FP32", "data": features.flatten().tolist()},
        {"name": "mask", "shape": list(mask.shape), "datatype": "INT64", "data": mask.flatten().tolist()}]})
    with torch.inference_mode():
        want = program(features, mask)
    for answer in out["outputs"]:
        expected = want[answer["name"]]
        assert torch.allclose(torch.tensor(answer["data"]).reshape(expected.shape), expected, atol=1e-4)


class Planted:
    """A pickle whose loading would leave a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_what_is_not_a_servable_model_is_refused_in_one_line_and_never_run(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from hf_models import tiny_bert_classifier

    root = claim(cluster, namespace, "bad")
    (root / "notes").mkdir()
    (root / "notes" / "README.txt").write_text("not a model")
    pickled = tiny_bert_classifier(root / "pickled")
    marker = Path.home() / ".cache" / "kubeforge-test-markers" / f"{namespace}-pickle-ran"  # pods share no /tmp
    marker.parent.mkdir(parents=True, exist_ok=True)
    (pickled / "model.safetensors").unlink()
    torch.save({"weights": Planted(marker)}, pickled / "pytorch_model.bin")
    corrupt = tiny_bert_classifier(root / "corrupt")
    weights = corrupt / "model.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])
    for name in ("notes", "pickled", "corrupt"):
        serve(cluster, namespace, name, {"uri": f"pvc://bad/{name}"})
    for name in ("notes", "pickled", "corrupt"):
        sj = wait_for(lambda n=name: (s := get(cluster, namespace, "servingjobs", n)).get("status", {}).get("stopped")
                      and s, 240, what=f"{name} to be stopped")
        stopped, ready_cond = sj["status"]["stopped"], condition(sj, "Ready") or {}
        assert ready_cond.get("status") == "False" and stopped["reason"] in ("ModelNotFound", "ModelLoadFailed")
        message = stopped["message"]
        assert "\n" not in message and f"pvc://bad/{name}" in message and "Traceback" not in message, message
        assert sj["status"].get("readyReplicas", 0) == 0
    assert not marker.exists()
