"""Fine-tuning a causal LM on the real control plane: a 2-node LoRA fine-tune reading its base model
and chat data from a claim, and one reading them from the embedded object store, each succeed and
publish the merged model and the adapter with lineage and the before/after evaluation; `kubeforge
run` of the same YAML (the claim's files under --claims) gives the same evaluation."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, Cluster, ObjectStore, wait_for
from minicluster.operator_process import OperatorProcess
from test_models_you_bring import claim, create
from test_servingjob import get
from test_servingjob_s3 import secret, upload

sys.path.insert(0, str(REPO / "tests"))
from llm_models import chat_jsonl, tiny_llama

pytestmark = [pytest.mark.cluster, pytest.mark.embedded("writes the base model through the claim's hostPath")]
Obj = dict[str, Any]


def job(name: str, model: Obj, data: Obj) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": {
        "nodes": 2, "strategy": "ddp",
        "finetune": {"model": model, "data": data, "method": "lora", "maxSeqLength": 64, "batchSize": 4,
                     "maxSteps": 4, "learningRate": 1e-3, "evalFraction": 0.2},
        "checkpoint": {"intervalSteps": 2},
        "storage": {"persistentVolumeClaim": {"claimName": "llm"}, "path": f"runs/{name}"},
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "2Gi"}}}}


def finished(cluster: Cluster, ns: str, name: str) -> Obj:
    return dict(wait_for(lambda: (j := get(cluster, ns, "trainingjobs", name)).get("status", {}).get("state")
                         in ("Succeeded", "Failed") and j, 600, what=f"{name} to finish"))


def check_published(status: Obj, root: Path, name: str) -> None:
    assert status["state"] == "Succeeded", status
    artifact, adapter = status["artifact"], status["adapterArtifact"]
    assert artifact["format"] == adapter["format"] == "hf-transformers"
    assert artifact["uri"] == f"pvc://llm/runs/{name}/artifact" and adapter["uri"] == f"pvc://llm/runs/{name}/adapter"
    evaluation = status["evaluation"]
    assert evaluation["before"]["perplexity"] > 0 and evaluation["after"]["loss"] > 0
    assert 0 < evaluation["trainableFraction"] < 0.5
    lineage = json.loads((root / "runs" / name / "artifact" / "kubeforge-lineage.json").read_text())
    assert "lora" in json.dumps(lineage), lineage


def test_lora_fine_tunes_from_a_claim_and_from_s3_and_the_same_yaml_runs_locally(
        cluster: Cluster, operator: OperatorProcess, namespace: str, object_store: ObjectStore,
        tmp_path: Path) -> None:
    root = claim(cluster, namespace, "llm")
    tiny_llama(root / "base")
    chat_jsonl(root / "chat.jsonl", 40)
    bucket = f"kf-ft-{uuid.uuid4().hex[:8]}"
    store = object_store.client()
    store.create_bucket(Bucket=bucket)
    upload(store, root / "base", bucket, "base")
    store.upload_file(str(root / "chat.jsonl"), bucket, "data/chat.jsonl")
    secret(cluster, namespace, "s3-credentials", object_store)
    from_claim = job("ft-claim", {"uri": "pvc://llm/base"}, {"uri": "pvc://llm/chat.jsonl"})
    from_s3 = job("ft-s3", {"uri": f"s3://{bucket}/base", "secretRef": {"name": "s3-credentials"}},
                  {"uri": f"s3://{bucket}/data/chat.jsonl", "secretRef": {"name": "s3-credentials"}})
    for doc in (from_claim, from_s3):
        create(cluster, namespace, "trainingjobs", {k: v for k, v in doc.items() if k != "apiVersion"})
    claimed, copied = finished(cluster, namespace, "ft-claim"), finished(cluster, namespace, "ft-s3")
    check_published(claimed["status"], root, "ft-claim")
    check_published(copied["status"], root, "ft-s3")
    assert claimed["status"]["evaluation"]["before"] == copied["status"]["evaluation"]["before"]

    claims = tmp_path / "claims"
    shutil.copytree(root / "base", claims / "llm" / "base")
    shutil.copy(root / "chat.jsonl", claims / "llm" / "chat.jsonl")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(from_claim))
    run = subprocess.run([sys.executable, "-m", "kubeforge_cli", "run", str(tmp_path / "job.yaml"), "--quiet",
                          "--runs-dir", str(tmp_path / "runs"), "--claims", str(claims)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    [record] = list((tmp_path / "runs").glob("*/run.json"))
    local = json.loads(record.read_text())["status"]["evaluation"]
    cluster_eval = claimed["status"]["evaluation"]
    assert local["before"] == cluster_eval["before"]
    assert abs(local["after"]["loss"] - cluster_eval["after"]["loss"]) < 1e-4, (local, cluster_eval)
    assert object_store.secret_key not in json.dumps(copied)
    assert base64.b64encode(object_store.secret_key.encode()).decode() not in json.dumps(copied)
