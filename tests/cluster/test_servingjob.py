"""ServingJob end to end on the real control plane: it waits for its TrainingJob, serves the
artifact the job produced (the same outputs as the model in-process), never sends traffic to a
revision that cannot load its model, and takes everything it created with it when deleted."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO, Cluster, absent, condition, wait_condition, wait_for
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


def is_ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def server_ips(cluster: Cluster, ns: str) -> list[str]:
    pods = cluster.client.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=kubeforge.dev%2Fserving-name")["items"]
    return [p["status"]["podIP"] for p in pods if p.get("status", {}).get("podIP") and is_ready(p)]


def claim_dir(cluster: Cluster, ns: str, claim: str) -> Path:
    pvc = cluster.client.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
    pv = cluster.client.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    return Path(pv["spec"]["hostPath"]["path"])


@pytest.mark.embedded("reads the artifact through the claim's hostPath on this machine")
def test_serving_waits_for_training_then_serves_its_artifact(cluster: Cluster, operator: OperatorProcess,
                                                             namespace: str) -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(SAMPLE.read_text()) if d}
    sj_name, tj_name = docs["ServingJob"]["metadata"]["name"], docs["TrainingJob"]["metadata"]["name"]
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    waiting = wait_for(lambda: condition(get(cluster, namespace, "servingjobs", sj_name), "Ready"), 60,
                       what="the ServingJob's first status")
    assert (waiting["status"], waiting["reason"]) == ("False", "ModelNotReady")
    wait_condition(cluster, namespace, tj_name, "Succeeded", 600)  # says why when the job ends otherwise
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"sj/{sj_name}", "--timeout=180s")
    tj, sj = get(cluster, namespace, "trainingjobs", tj_name), get(cluster, namespace, "servingjobs", sj_name)
    st = sj["status"]
    assert condition(tj, "Compressed")["status"] == "True", tj["status"]
    published = tj["status"]["compression"]["artifact"]
    [cand] = tj["status"]["compression"]["candidates"]  # typed in the CRD: pruning would drop an unknown field
    assert cand["speedup"]["batch1"] > 0 and cand["parameters"]["mode"] == "dynamic", tj["status"]["compression"]
    assert st["model"] == {"uri": published["uri"], "digest": published["digest"], "trainingJob": tj_name,
                           "variant": "compressed", "format": "kubeforge", "sizeBytes": published["sizeBytes"]}
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
    assert "pvc://models/runs/nothing" in degraded["message"], degraded  # the user's uri, not the mount
    sj = get(cluster, namespace, "servingjobs", sj_name)
    assert condition(sj, "Ready")["status"] == "True"
    assert sj["status"]["model"] == st["model"], sj["status"]  # what is served, not the broken target
    assert sj["status"]["targetModel"] == {"uri": "pvc://models/runs/nothing"}, sj["status"]
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


def write_model(directory: Path, seed: int) -> torch.nn.Module:
    """A digits-shaped MLP artifact, written with the trainer's own builder and artifact writer."""
    from kubeforge_trainer import artifacts
    from kubeforge_trainer.models import build

    arch = {"model": "mlp", "inputDim": 64, "hidden": 32, "layers": 2, "numClasses": 10}
    torch.manual_seed(seed)
    model = build(arch).eval()
    artifacts.write(directory, model.state_dict(), {"architecture": arch, "metrics": {}})
    return model


class Load:
    """Steady requests through the Service while something changes, `clients` at a time on a fixed
    schedule (a slow answer delays one client, not the rate); counts every failure of any kind."""

    def __init__(self, url: str, rows: list[list[float]], rate: float = 60.0, clients: int = 1) -> None:
        self.url, self.rows, self.period = url, rows, clients / rate
        self.ok, self.failed, self.answers = 0, [], []  # type: ignore[var-annotated]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self.started = self.ended = 0.0

    def _run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            try:
                answer, error = infer_url(self.url, self.rows), None
            except Exception as e:  # every way a request can fail is a lost request
                answer, error = None, f"{time.time():.3f} {e!r}"
            with self.lock:
                if error is None:
                    self.ok += 1
                    self.answers.append(answer)
                else:
                    self.failed.append(error)
            due = max(due + self.period, time.monotonic() - self.period)  # late: no burst to catch up
            self.stop.wait(max(due - time.monotonic(), 0.0))

    @property
    def rate(self) -> float:
        """Requests per second sent while the load ran."""
        return (self.ok + len(self.failed)) / max(self.ended - self.started, 1e-9)

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        self.ended = time.monotonic()


def infer_url(url: str, rows: list[list[float]]) -> list[float]:
    body = {"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                        "data": [v for row in rows for v in row]}]}
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return list(json.loads(r.read())["outputs"][0]["data"])


def serving_models(service_routing: Cluster, ns: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    cluster = service_routing
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
                   "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}, ns)
    wait_for(lambda: cluster.client.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/models")
             .get("spec", {}).get("volumeName"), 60, what="the claim to bind")
    root = claim_dir(cluster, ns, "models")
    return write_model(root / "a", 1), write_model(root / "b", 2)


def close(a: list[float], b: torch.Tensor) -> bool:
    return bool(torch.allclose(torch.tensor(a), b.flatten(), atol=1e-4))


def answers(url: str, rows: list[list[float]], expected: torch.Tensor | None = None) -> bool:
    """Whether the Service answers (with `expected`, when given): a poll, whose misses are not requests
    of the steady load (those are counted by `Load`)."""
    try:
        reply = infer_url(url, rows)
    except OSError:
        return False
    return expected is None or close(reply, expected)


def web_pods(cluster: Cluster, ns: str) -> list[Obj]:
    path = f"/api/v1/namespaces/{ns}/pods?labelSelector=kubeforge.dev%2Fserving-name%3Dweb"
    return list(cluster.client.get(path)["items"])


def ready_endpoints(cluster: Cluster, ns: str) -> set[str]:
    """Ready addresses in the EndpointSlices of Service `web` (what kube-proxy routes to)."""
    slices = cluster.client.get(
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb")
    return {a for sl in slices["items"] for e in sl.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
            for a in e["addresses"]}


def settled(cluster: Cluster, ns: str, replicas: int) -> bool:
    """No server of `web` is still shutting down, and `replicas` of them are ready."""
    pods = web_pods(cluster, ns)
    return len(pods) == replicas and all(is_ready(p) and not p["metadata"].get("deletionTimestamp") for p in pods)


def test_rollout_and_pod_deletion_under_load_lose_nothing_and_the_canary_gets_its_share(
        service_routing: Cluster, operator: OperatorProcess, namespace: str) -> None:
    cluster = service_routing
    model_a, model_b = serving_models(cluster, namespace)
    rows = digits().x_eval[:2]
    out_a, out_b = model_a(rows).detach(), model_b(rows).detach()
    cluster.apply({"apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob", "metadata": {"name": "web"},
                   "spec": {"model": {"uri": "pvc://models/a"}, "replicas": 2}}, namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "sj/web", "--timeout=180s")
    ip = cluster.client.get(f"/api/v1/namespaces/{namespace}/services/web")["spec"]["clusterIP"]
    url = f"http://{ip}:80/v2/models/web/infer"
    wait_for(lambda: answers(url, rows.tolist(), out_a), 60, what="kube-proxy to route the new Service")

    # Under load until every stopped server has exited: a rolling update to model b, then a pod deletion.
    with Load(url, rows.tolist(), clients=3) as load:
        cluster.kubectl("patch", "-n", namespace, "sj/web", "--type=merge", "-p",
                        json.dumps({"spec": {"model": {"uri": "pvc://models/b"}}}))
        wait_for(lambda: all(answers(url, rows.tolist(), out_b) for _ in range(10)), 180,
                 what="every server to serve model b")
        wait_for(lambda: settled(cluster, namespace, 2), 120, what="the old servers to exit")
        pod = next(p for p in web_pods(cluster, namespace) if is_ready(p))
        cluster.kubectl("delete", "-n", namespace, "pod", pod["metadata"]["name"], "--wait=false")
        wait_for(lambda: settled(cluster, namespace, 2), 120, what="the deleted server to exit, replaced")
    assert not load.failed and load.ok > 100, (load.ok, load.rate, load.failed[:3])  # no rate: CI may be busy
    assert all(close(a, out_a) or close(a, out_b) for a in load.answers)

    cluster.kubectl("patch", "-n", namespace, "sj/web", "--type=merge", "-p", json.dumps(
        {"spec": {"canary": {"model": {"uri": "pvc://models/a"}, "trafficPercent": 50}}}))
    wait_for(lambda: (get(cluster, namespace, "servingjobs", "web")["status"].get("canary") or {})
             .get("readyReplicas") == 1, 180, what="the canary to be ready")
    # The share is a property of the rotation: measure once it holds one ready server per track and
    # kube-proxy has programmed it (the canary answers through the Service), not while it converges.
    wait_for(lambda: settled(cluster, namespace, 2) and len(ready_endpoints(cluster, namespace)) == 2, 120,
             what="one server per track in the Service's rotation")
    wait_for(lambda: answers(url, rows.tolist(), out_a), 60, what="the canary to answer through the Service")
    replies = [infer_url(url, rows.tolist()) for _ in range(120)]
    share = sum(close(a, out_a) for a in replies) / len(replies)
    assert 0.3 <= share <= 0.7, share  # one replica per track: about half of the requests


def test_the_autoscaler_adds_servers_under_load_and_removes_them_after(
        service_routing: Cluster, resource_metrics: Cluster, operator: OperatorProcess, namespace: str) -> None:
    cluster = service_routing
    serving_models(cluster, namespace)
    cluster.apply({"apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob", "metadata": {"name": "busy"},
                   "spec": {"model": {"uri": "pvc://models/a"}, "resources": {"requests": {"cpu": "50m"}},
                            "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50,
                                            "scaleDownStabilizationSeconds": 10}}}, namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "sj/busy", "--timeout=180s")
    ip = cluster.client.get(f"/api/v1/namespaces/{namespace}/services/busy")["spec"]["clusterIP"]
    rows = digits().x_eval[:32].tolist()  # a full batch per request (maxBatchSize 32)
    url = f"http://{ip}:80/v2/models/busy/infer"
    wait_for(lambda: answers(url, rows), 60, what="kube-proxy to route the new Service")

    def replicas() -> int:
        return int(get(cluster, namespace, "servingjobs", "busy")["status"].get("replicas", 0))

    loads = [Load(url, rows, rate=200.0) for _ in range(4)]
    for load in loads:
        load.__enter__()
    try:
        wait_for(lambda: replicas() >= 2, 120, what="the HPA to add a server under load")
    finally:
        for load in loads:
            load.__exit__()
    assert not [f for load in loads for f in load.failed], "requests failed while scaling out"
    wait_for(lambda: replicas() == 1, 120, what="the HPA to remove the extra servers after the load")


def test_a_servingjob_on_a_claim_that_does_not_exist_is_unschedulable_and_says_so(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    cluster.client.create(f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/servingjobs", {
        "apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob", "metadata": {"name": "noclaim"},
        "spec": {"model": {"uri": "pvc://modelz/runs/digits/artifact"}}})
    ready = wait_for(lambda: (c := condition(get(cluster, namespace, "servingjobs", "noclaim"), "Ready"))
                     and c["reason"] == "Unschedulable" and c, 120, what="Ready=False Unschedulable")
    assert ready["status"] == "False" and "modelz" in ready["message"], ready
    assert condition(get(cluster, namespace, "servingjobs", "noclaim"), "Degraded")["status"] == "True"


def test_a_model_path_typo_stops_the_servers_instead_of_crash_looping(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    cluster.client.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
        "metadata": {"name": "models"}, "spec": {"accessModes": ["ReadWriteMany"],
                                                 "resources": {"requests": {"storage": "1Gi"}}}})
    cluster.client.create(f"/apis/kubeforge.dev/v1alpha1/namespaces/{namespace}/servingjobs", {
        "apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob", "metadata": {"name": "typo"},
        "spec": {"model": {"uri": "pvc://models/runs/digts/artifact"}}})
    sj = wait_for(lambda: (s := get(cluster, namespace, "servingjobs", "typo")).get("status", {}).get("stopped")
                  and s, 180, what="the servers stopped")
    ready = condition(sj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ModelNotFound"), ready
    assert "pvc://models/runs/digts/artifact" in ready["message"], ready  # the user's uri, not the mount
    dep = f"/apis/apps/v1/namespaces/{namespace}/deployments/typo"
    wait_for(lambda: cluster.client.get(dep)["spec"]["replicas"] == 0 and
             not cluster.client.get(dep).get("status", {}).get("replicas"), 60, what="no server left running")
