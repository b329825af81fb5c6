"""Compression of a model a user's own script trained, judged on the user's own eval data, on the
real control plane: the text-classifier sample's script trains a Hugging Face classifier and holds
out a JSONL; int8 within the budget is published and served (the compressed variant answers the
same labels), and the same model damaged so int8 cannot keep its accuracy is rejected with
AccuracyBudgetExceeded and nothing published."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import yaml
from conftest import REPO, Cluster, condition, wait_for
from minicluster.operator_process import OperatorProcess
from test_models_you_bring import claim, classify, create, ready, ready_ips, serve
from test_servingjob import get

pytestmark = [pytest.mark.cluster, pytest.mark.embedded("reads the claim's hostPath on this machine")]
Obj = dict[str, Any]
SAMPLE = REPO / "manifests" / "samples" / "trainingjob-text-classifier.yaml"
# Appended to the sample's script: a LayerNorm bias so large that int8 activations lose the signal.
DAMAGE = """
out = os.environ["KUBEFORGE_OUTPUT_DIR"]
damaged = transformers.BertForSequenceClassification.from_pretrained(out)
with torch.no_grad():
    damaged.bert.encoder.layer[-1].output.LayerNorm.bias[7] = 1e4
    damaged.bert.pooler.dense.weight[:, 7] = 0.0
damaged.save_pretrained(out)
"""


def script(damage: bool) -> str:
    job = next(d for d in yaml.safe_load_all(SAMPLE.read_text()) if d and d["kind"] == "TrainingJob")
    text: str = job["spec"]["args"][0]
    return text.replace("range(3)", "range(1)") + (DAMAGE if damage else "")  # one epoch is enough here


def job(name: str, damage: bool) -> Obj:
    return {"kind": "TrainingJob", "metadata": {"name": name}, "spec": {
        "command": [sys.executable, "-c", script(damage)],
        "storage": {"persistentVolumeClaim": {"claimName": "models"}, "path": f"runs/{name}"},
        "compression": {"methods": [{"quantize": {"mode": "dynamic"}}], "objective": "size",
                        "accuracyBudget": {"maxDrop": 0.02},
                        "evalData": {"uri": f"pvc://models/runs/{name}/eval.jsonl", "format": "jsonl"}},
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "2Gi"}}}}


def finished(cluster: Cluster, ns: str, name: str) -> Obj:
    return dict(wait_for(lambda: (j := get(cluster, ns, "trainingjobs", name)).get("status", {}).get("state")
                         in ("Succeeded", "Failed") and j, 600, what=f"{name} to finish"))


def test_int8_within_the_users_budget_is_served_and_over_it_is_rejected(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    claim(cluster, namespace, "models")
    for name, damage in (("clf-ok", False), ("clf-over", True)):
        create(cluster, namespace, "trainingjobs", job(name, damage))
    ok, over = finished(cluster, namespace, "clf-ok"), finished(cluster, namespace, "clf-over")

    st = ok["status"]
    assert st["state"] == "Succeeded" and st["artifact"]["format"] == "hf-transformers", st
    comp = st["compression"]
    assert comp["compressed"] is True and comp["reason"] == "Compressed" and comp["chosen"] == "quantize-dynamic", comp
    assert comp["metric"] == "accuracy" and comp["artifact"]["uri"].startswith("pvc://models/runs/clf-ok/compressed/")
    assert (condition(ok, "Compressed") or {}).get("status") == "True"

    st = over["status"]
    assert st["state"] == "Succeeded" and st["compression"]["reason"] == "AccuracyBudgetExceeded", st
    assert "artifact" not in st["compression"] and (condition(over, "Compressed") or {}).get("status") == "False"

    serve(cluster, namespace, "clf", {"trainingJobRef": {"name": "clf-ok", "variant": "compressed"}})
    sj = ready(cluster, namespace, "clf")
    assert sj["status"]["model"]["variant"] == "compressed"
    (ip,) = ready_ips(cluster, namespace, "clf")
    _, labels = classify(ip, "clf")
    assert labels == ["positive", "negative", "positive", "negative"], labels
