"""ServingJob end to end on the real control plane: it waits for its TrainingJob, serves the
artifact the job produced (the same outputs as the model in-process), never sends traffic to a
revision that cannot load its model, and takes everything it created with it when deleted."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import torch
import yaml
from conftest import REPO, Cluster, absent, condition, wait_for
from kubeforge_trainer.artifacts import load_model
from kubeforge_trainer.data import digits
from minicluster.operator_process import OperatorProcess

Obj = dict[str, Any]
SAMPLE = REPO / "manifests" / "samples" / "servingjob-digits.yaml"
API = "/apis/kubeforge.dev/v1alpha1/namespaces/{ns}/{plural}/{name}"


def get(cluster: Cluster, ns: str, plural: str, name: str) -> Obj:
    return dict(cluster.client.get(API.format(ns=ns, plural=plural, name=name)))


def infer(ip: str, name: str, rows: list[list[float]]) -> list[float]:
    body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                        "data": [v for row in rows for v in row]}]}
    req = urllib.request.Request(f"http://{ip}:8080/v2/models/{name}/infer", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return list(json.loads(r.read())["outputs"][0]["data"])


def server_ips(cluster: Cluster, ns: str) -> list[str]:
    pods = cluster.client.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=kubeforge.dev%2Fserving-name")["items"]
    return [p["status"]["podIP"] for p in pods if p.get("status", {}).get("podIP") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def claim_dir(cluster: Cluster, ns: str, claim: str) -> Path:
    pvc = cluster.client.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
    pv = cluster.client.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    return Path(pv["spec"]["hostPath"]["path"])


def test_serving_waits_for_training_then_serves_its_artifact(cluster: Cluster, operator: OperatorProcess,
                                                             namespace: str) -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(SAMPLE.read_text()) if d}
    sj_name, tj_name = docs["ServingJob"]["metadata"]["name"], docs["TrainingJob"]["metadata"]["name"]
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    waiting = wait_for(lambda: condition(get(cluster, namespace, "servingjobs", sj_name), "Ready"), 60,
                       what="the ServingJob's first status")
    assert (waiting["status"], waiting["reason"]) == ("False", "ModelNotReady")
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", f"tj/{tj_name}", "--timeout=300s")
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"sj/{sj_name}", "--timeout=180s")
    tj, sj = get(cluster, namespace, "trainingjobs", tj_name), get(cluster, namespace, "servingjobs", sj_name)
    st = sj["status"]
    assert condition(tj, "Compressed")["status"] == "True", tj["status"]
    published = tj["status"]["compression"]["artifact"]
    assert st["model"] == {"uri": published["uri"], "digest": published["digest"], "trainingJob": tj_name,
                           "variant": "compressed"}
    assert st["url"] == f"http://{sj_name}.{namespace}.svc.cluster.local" and st["readyReplicas"] == 1
    assert condition(sj, "Degraded")["status"] == "False"

    storage = claim_dir(cluster, namespace, "models") / "runs" / "digits-small"
    _, original = load_model(storage / "artifact")  # the trained model stays next to the compressed one
    assert sum(p.numel() for p in original.parameters()) > 0
    card, model = load_model(storage / published["uri"].split("/runs/digits-small/", 1)[1])
    assert card["weights"]["digest"] == published["digest"]
    rows = digits().x_eval[:5]
    expected = model(rows).detach().flatten().tolist()
    (ip,) = server_ips(cluster, namespace)
    assert torch.allclose(torch.tensor(infer(ip, sj_name, rows.tolist())), torch.tensor(expected), atol=1e-4)

    # A model that cannot be loaded never takes traffic: the serving revision stays, status says Degraded.
    cluster.kubectl("patch", "-n", namespace, f"sj/{sj_name}", "--type=merge", "-p",
                    json.dumps({"spec": {"model": {"trainingJobRef": None, "uri": "pvc://models/runs/nothing"}}}))
    degraded = wait_for(lambda: (c := condition(get(cluster, namespace, "servingjobs", sj_name), "Degraded"))
                        and c["status"] == "True" and c, 120, what="Degraded after a broken rollout")
    assert degraded["reason"] == "ModelNotFound", degraded
    sj = get(cluster, namespace, "servingjobs", sj_name)
    assert condition(sj, "Ready")["status"] == "True"
    assert torch.allclose(torch.tensor(infer(ip, sj_name, rows.tolist())), torch.tensor(expected), atol=1e-4)

    cluster.kubectl("delete", "-n", namespace, f"sj/{sj_name}", "--wait=true", "--timeout=60s")
    for path in (f"/apis/apps/v1/namespaces/{namespace}/deployments/{sj_name}",
                 f"/api/v1/namespaces/{namespace}/services/{sj_name}",
                 f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{sj_name}"):
        wait_for(lambda p=path: absent(cluster, p), 60, what=f"{path} to be garbage-collected")


def test_bad_servingjobs_are_rejected_at_admission_naming_the_field(cluster: Cluster, operator: OperatorProcess,
                                                                    namespace: str) -> None:
    base = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob", "metadata": {"name": "bad"}}
    cases = [({"model": {}}, "exactly one of trainingJobRef or uri"),
             ({"model": {"uri": "http://evil/model"}}, "spec.model.uri"),
             ({"model": {"uri": "pvc://c/m"}, "replicas": 2, "autoscaling": {"maxReplicas": 3}},
              "mutually exclusive"),
             ({"model": {"uri": "pvc://c/m"}, "autoscaling": {"minReplicas": 4, "maxReplicas": 3}}, "minReplicas")]
    for spec, needle in cases:
        out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump({**base, "spec": spec}),
                              check=False)
        assert out.returncode != 0 and needle in out.stderr, (spec, out.stderr)
