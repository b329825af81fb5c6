"""Realistic objects for the dashboard tests, shaped like what the operator writes: a running job
with curves, a pending-unschedulable one, a failed one with an exit code, one that restarted after
an OOM kill, succeeded ones whose compression was accepted and rejected, and a ServingJob with a
canary; plus their pods, events, logs and a node; a hostile tenant's namespace; and what the
real-browser tests share to drive a page on a busy machine."""

from __future__ import annotations

import re
from typing import Any

from kubeforge_api.compression import CompressionReport, CompressionTermination
from kubeforge_api.constants import LABEL_JOB, LABEL_MANAGED_BY, LABEL_RANK, LABEL_ROLE, LABEL_SERVING, LABEL_TRACK
from kubeforge_api.curves import encode
from kubeforge_api.meta import Condition
from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import CompressionStatus, TrainingJob
from kubeforge_dashboard.auth import Check, Identity
from kubeforge_dashboard.memory import MemorySource
from kubeforge_dashboard.source import ContainerState, EventInfo, NodeInfo, PodInfo, Resources, Usage

NS = "ml"
T0 = "2026-11-28T10:00:00Z"
DIGEST = "sha256:" + "ab" * 32
RECIPE = {"model": "mlp", "dataset": "digits", "epochs": 8, "batchSize": 64}


def cond(ctype: str, status: str, reason: str, message: str, minute: int) -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": f"2026-11-28T10:{minute:02d}:00Z"}


def cond_model(ctype: str, status: str, reason: str, message: str, minute: int) -> Condition:
    return Condition.model_validate(cond(ctype, status, reason, message, minute))


def tj(name: str, status: dict[str, Any] | None, nodes: int = 2, namespace: str = NS, **spec: Any) -> TrainingJob:
    body: dict[str, Any] = {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": T0,
                                         "uid": f"u-{name}"},
                            "spec": {"nodes": nodes, "recipe": RECIPE, **spec}}
    if status is not None:
        body["status"] = status
    return TrainingJob.model_validate(body)


def history(n: int) -> dict[str, str]:
    """`status.history` as the operator writes it: one `step:value` string per curve."""
    return {"loss": encode((i * 10, 2.3 / (1 + i)) for i in range(n)),
            "evalLoss": encode((i * 40, 2.4 / (1 + i)) for i in range(n // 4)),
            "accuracy": encode((i * 40, min(0.1 + 0.1 * i, 0.97)) for i in range(n // 4)),
            "samplesPerSecond": encode((i * 10, 900.0 + i) for i in range(n))}


def report(accepted: bool) -> dict[str, Any]:
    """`status.compression` as the operator writes it: the compression pod's report, through its
    termination message, with the published artifact under the job's storage."""
    lat = {"batch1": 0.80, "batch8": 2.0}
    cands = [{"method": "quantize-dynamic", "verdict": "accepted" if accepted else "rejected",
              "parameters": {"mode": "dynamic", "backend": "eager"},
              "measured": {"metric": 0.951 if accepted else 0.801, "sizeBytes": 11_000, "parameters": 10,
                           "latencyMs": {"batch1": 0.40, "batch8": 1.0}},
              "drop": 0.004 if accepted else 0.154, "speedup": {"batch1": 2.0, "batch8": 2.0}},
             {"method": "prune-structured", "verdict": "rejected",
              "measured": {"metric": 0.70, "sizeBytes": 20_000, "parameters": 10, "latencyMs": lat},
              "drop": 0.255, "speedup": {"batch1": 1.0, "batch8": 1.0}}]
    out: dict[str, Any] = {"metric": "accuracy", "higherIsBetter": True, "budget": {"maxDrop": 0.01},
                           "select": "best", "threads": 1, "baseline": {"metric": 0.955, "sizeBytes": 42_000,
                                                                        "parameters": 10, "latencyMs": lat},
                           "parent": {"path": "artifact", "digest": DIGEST, "sizeBytes": 42_000},
                           "candidates": cands,
                           "reason": "Compressed" if accepted else "AccuracyBudgetExceeded",
                           "message": "quantize-dynamic kept accuracy within 0.01" if accepted
                           else "no candidate stayed within the accuracy budget (max drop 0.01)"}
    if accepted:
        out["chosen"] = 0
        out["artifact"] = {"path": "compressed/quantize-dynamic", "digest": DIGEST, "sizeBytes": 11_000}
    term = CompressionTermination.from_report(CompressionReport.model_validate(out), "compressed/report.json")
    return CompressionStatus.reported(term, "pvc://models/runs/digits-q", attempts=1).dump()


def succeeded(name: str, accepted: bool) -> TrainingJob:
    return tj(name, {
        "state": "Succeeded", "reason": "Completed", "restartCount": 0, "startTime": "2026-11-28T10:01:00Z",
        "completionTime": "2026-11-28T10:09:00Z",
        "conditions": [cond("Running", "False", "Completed", "all 2 worker pods succeeded", 9),
                       cond("Succeeded", "True", "Completed", "all 2 worker pods succeeded", 9)],
        "progress": {"step": 400, "totalSteps": 400, "percent": "100.0%", "loss": 0.05, "eval": {"accuracy": 0.955}},
        "history": history(40), "lastCheckpoint": {"step": 400},
        "artifact": {"uri": f"pvc://models/runs/{name}/artifact", "digest": DIGEST, "sizeBytes": 42_000},
        "compression": report(accepted)}, compression={"methods": [{"quantize": {}}]},
        storage={"persistentVolumeClaim": {"claimName": "models"}, "path": f"runs/{name}"})


FINETUNE: dict[str, Any] = {
    "model": {"uri": "pvc://models/base/tiny-llama"}, "data": {"uri": "pvc://data/chat.jsonl", "format": "messages"},
    "method": "lora", "lora": {"rank": 8, "alpha": 16, "targetModules": ["q_proj", "v_proj"]},
    "maxSeqLength": 512, "epochs": 1, "batchSize": 8, "learningRate": 2e-4}


def finetune_job(status: dict[str, Any] | None = None, **finetune: Any) -> TrainingJob:
    """A LoRA fine-tune (spec.finetune as the sample writes it) with `status`; None values are left out."""
    body: dict[str, Any] = {"metadata": {"name": "chat-lora", "namespace": NS},
                            "spec": {"nodes": 2, "strategy": "fsdp", "finetune": {
                                k: v for k, v in {**FINETUNE, **finetune}.items() if v is not None}}}
    if status is not None:
        body["status"] = {k: v for k, v in status.items() if v is not None}
    return TrainingJob.model_validate(body)


def finished_finetune() -> dict[str, Any]:
    """A succeeded LoRA fine-tune's status: merged model, adapter, evaluation before and after."""
    return {"state": "Succeeded",
            "artifact": {"uri": "pvc://models/runs/chat-lora/artifact", "digest": "sha256:" + "cd" * 32,
                         "sizeBytes": 3 << 20, "format": "hf-transformers"},
            "adapterArtifact": {"uri": "pvc://models/runs/chat-lora/adapter", "digest": "sha256:" + "ef" * 32,
                                "sizeBytes": 40 << 10},
            "evaluation": {"before": {"loss": 2.0, "perplexity": 7.389}, "after": {"loss": 1.5, "perplexity": 4.482},
                           "trainableFraction": 0.0123, "tokensPerSecond": 1234.5}}


def training_jobs() -> list[TrainingJob]:
    running = tj("digits-running", {
        "state": "Running", "reason": "AllPodsRunning", "restartCount": 0, "startTime": "2026-11-28T10:01:00Z",
        "conditions": [cond("Running", "True", "AllPodsRunning", "all 2 pods are running", 2)],
        "progress": {"step": 120, "totalSteps": 400, "percent": "30.0%", "epoch": 2, "loss": 0.4213,
                     "samplesPerSecond": 912.0, "etaSeconds": 95, "eval": {"accuracy": 0.88}},
        "history": history(12), "lastCheckpoint": {"step": 100}})
    pending = tj("big-pending", {
        "state": "Pending", "reason": "Unschedulable", "startTime": "2026-11-28T10:01:00Z",
        "conditions": [cond("Running", "False", "Unschedulable", "pod big-pending-node-0: 0/1 nodes are available: "
                            "1 Insufficient nvidia.com/gpu.", 2)]}, nodes=4,
        resources={"limits": {"nvidia.com/gpu": 8}})
    failed = tj("broken", {
        "state": "Failed", "reason": "BackoffLimitExceeded", "restartCount": 3,
        "completionTime": "2026-11-28T10:06:00Z",
        "conditions": [cond("Failed", "True", "BackoffLimitExceeded", "3 counted failures; the last: exit code 3 in "
                            "pod broken-node-1", 6)],
        "lastFailure": {"pod": "broken-node-1", "container": "trainer", "exitCode": 3, "reason": "Error",
                        "message": "ValueError: bad learning rate"}})
    restarted = tj("oom-restarted", {
        "state": "Running", "reason": "AllPodsRunning", "restartCount": 1, "startTime": "2026-11-28T10:01:00Z",
        "conditions": [cond("Restarting", "False", "Restarted", "attempt 1 is running", 5),
                       cond("Running", "True", "AllPodsRunning", "all 2 pods are running", 5)],
        "lastFailure": {"pod": "oom-restarted-node-0", "container": "trainer", "exitCode": 137,
                        "reason": "OOMKilled"},
        "progress": {"step": 10, "totalSteps": 400, "percent": "2.5%"}})
    fresh = tj("just-created", None, nodes=1)
    return [running, pending, failed, restarted, succeeded("digits-q", True), succeeded("digits-strict", False), fresh]


def serving_job() -> ServingJob:
    model = {"uri": "pvc://models/runs/digits-q/compressed/quantize-dynamic", "digest": DIGEST,
             "trainingJob": "digits-q", "variant": "compressed"}
    canary = {"uri": "pvc://models/runs/digits-strict/artifact", "digest": "sha256:" + "cd" * 32,
              "trainingJob": "digits-strict", "variant": "original"}
    return ServingJob.model_validate({
        "metadata": {"name": "digits-serving", "namespace": NS, "creationTimestamp": T0},
        "spec": {"model": {"trainingJobRef": {"name": "digits-q"}}, "replicas": 2,
                 "canary": {"model": {"trainingJobRef": {"name": "digits-strict", "variant": "original"}},
                            "trafficPercent": 20}},
        "status": {"conditions": [cond("Ready", "True", "ModelLoaded", "2 of 2 replicas serve the model", 8),
                                  cond("Degraded", "False", "ModelLoaded", "", 8)],
                   "url": f"http://digits-serving.{NS}.svc.cluster.local", "replicas": 2, "readyReplicas": 2,
                   "model": model, "canary": {"model": canary, "trafficPercent": 20, "replicas": 1,
                                              "readyReplicas": 1}}})


def pod(name: str, labels: dict[str, str], *containers: ContainerState, phase: str = "Running", ready: bool = True,
        message: str = "", ip: str = "", port: int | None = None, cpu_m: int = 1000) -> PodInfo:
    return PodInfo(NS, name, phase, "" if phase == "Pending" else "kf-node", ip, ready, T0,
                   {**labels, LABEL_MANAGED_BY: "kubeforge-operator"}, containers, message,
                   Resources(cpu_m, 2 * 2**30, 0), port, f"uid-{name}")


def worker(job: str, rank: int, *containers: ContainerState, **kw: Any) -> PodInfo:
    return pod(f"{job}-node-{rank}", {LABEL_JOB: job, LABEL_ROLE: "node", LABEL_RANK: str(rank)}, *containers, **kw)


def pods(server_ip: str = "", server_port: int | None = None) -> list[PodInfo]:
    run = ContainerState("trainer", ready=True, state="running")
    return [
        worker("digits-running", 0, run), worker("digits-running", 1, run),
        worker("big-pending", 0, phase="Pending", ready=False,
               message="0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
        worker("broken", 1, ContainerState("trainer", state="terminated", reason="Error", exit_code=3),
               phase="Failed", ready=False),
        worker("oom-restarted", 0, ContainerState("trainer", ready=True, restarts=1, state="running",
                                                  last_exit_code=137, last_reason="OOMKilled")),
        pod("digits-serving-7d9f-abcde", {LABEL_SERVING: "digits-serving", LABEL_TRACK: "main"},
            ContainerState("server", ready=True, state="running"), ip=server_ip, port=server_port),
        pod("digits-serving-canary-5c4b-fghij", {LABEL_SERVING: "digits-serving", LABEL_TRACK: "canary"},
            ContainerState("server", ready=True, state="running"), ip=server_ip, port=server_port),
    ]


def events() -> list[EventInfo]:
    return [EventInfo("2026-11-28T10:01:00Z", "Normal", "PodsCreated", "created the pods of attempt 0",
                      "TrainingJob", "digits-running"),
            EventInfo("2026-11-28T10:02:00Z", "Warning", "FailedScheduling",
                      "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.", "Pod", "big-pending-node-0", 7),
            EventInfo("2026-11-28T10:04:00Z", "Warning", "GangRestart", "pod oom-restarted-node-0 was OOMKilled",
                      "TrainingJob", "oom-restarted")]


def world(server_ip: str = "", server_port: int | None = None) -> MemorySource:
    return MemorySource(
        training=training_jobs(), serving=[serving_job()], pod_list=pods(server_ip, server_port),
        event_list=events(),
        log_text={("digits-running-node-0", False): "step 110 loss 0.43\nstep 120 loss 0.4213",
                  ("oom-restarted-node-0", False): "resumed from step 0\nstep 10 loss 2.1",
                  ("oom-restarted-node-0", True): "step 90 loss 1.0\nKilled: out of memory",
                  ("broken-node-1", False): "Traceback (most recent call last):\nValueError: bad learning rate"},
        node_list=[NodeInfo("kf-node", True, Resources(32000, 64 * 2**30, 1), Resources(32000, 64 * 2**30, 1))],
        usage_now=usage())


def usage() -> Usage:
    """What metrics-server would report: the node busier than Kubeforge's requests say, one job measured."""
    return Usage(nodes={"kf-node": Resources(7250, 12 * 2**30, 0)},
                 pods={(NS, "digits-running-node-0"): Resources(1900, 2**30, 0),
                       (NS, "digits-running-node-1"): Resources(1850, 2**30, 0)})


# What a hostile tenant writes into every string the dashboard shows: Markdown images and links, a
# heading, raw HTML, a Streamlit colour directive, math and a bare domain (GFM autolinks it).
EVIL = "http://evil.example"
PAYLOAD = (f"![x]({EVIL}/img.png) [click]({EVIL}) :red[alarm] $x^2$ <img src={EVIL}/i.png> www.evil.example\n"
           "# giant heading\n=====")
BANNER = "=" * 40 + "\nroot cause (first observed failure):\n" + PAYLOAD


def hostile() -> MemorySource:
    """A namespace a hostile tenant filled: a failed command job whose name autolinks, whose args, condition,
    termination text, events and pod message carry the payload; a compressed job whose report's message and
    parameter keys carry it; a ServingJob whose condition does; and a local run's error."""
    name = "www.evil.example"
    failed = tj(name, {
        "state": "Failed", "reason": "BackoffLimitExceeded", "restartCount": 1,
        "conditions": [cond("Failed", "True", "BackoffLimitExceeded", PAYLOAD, 6)],
        "progress": {"step": 1, "totalSteps": 10, "eval": {PAYLOAD[:40]: 0.5}},
        "lastFailure": {"pod": f"{name}-node-0", "container": "trainer", "exitCode": 1, "reason": "Error",
                        "message": BANNER}}, nodes=1, recipe=None, command=["python", "-c", PAYLOAD], args=[PAYLOAD])
    compressed = succeeded("evil-report", True)
    status = compressed.status
    assert status is not None and status.compression is not None
    candidates = [c.model_copy(update={"parameters": {PAYLOAD[:40]: PAYLOAD[:64]}})
                  for c in status.compression.candidates or []]
    summary = status.compression.model_copy(update={"message": PAYLOAD, "candidates": candidates})
    compressed = compressed.model_copy(update={"status": status.model_copy(update={"compression": summary})})
    body = serving_job().model_dump(mode="json", by_alias=True, exclude_none=True)
    body["metadata"]["name"] = "evil-serving"
    body["status"]["conditions"] = [cond("Ready", "False", "ModelLoading", PAYLOAD, 8),
                                    cond("Degraded", "True", "NameConflict", PAYLOAD, 8)]
    sj = ServingJob.model_validate(body)
    pods_ = [worker(name, 0, ContainerState("trainer", state="terminated", reason="Error", exit_code=1),
                    phase="Failed", ready=False, message=PAYLOAD)]
    events_ = [EventInfo("2026-11-28T10:05:00Z", "Warning", "Failed", PAYLOAD, "TrainingJob", name)]
    return MemorySource(training=[failed, compressed], serving=[sj], pod_list=pods_, event_list=events_,
                        log_text={(f"{name}-node-0", False): PAYLOAD}, problems=[f"TrainingJob ml/x: {PAYLOAD}"],
                        node_list=[NodeInfo("kf-node", True, Resources(2000, 2**30, 0), Resources(2000, 2**30, 0))])


class MemoryReviewer:
    """A stand-in for the API server's TokenReview and SubjectAccessReview: `tokens` name users, `rules`
    say which (user, verb, resource, namespace) are allowed ("*" matches any; "" is cluster-wide)."""

    def __init__(self, tokens: dict[str, str], rules: set[tuple[str, str, str, str]]) -> None:
        self.tokens, self.rules = tokens, rules
        self.asked: list[tuple[str, str]] = []

    def authenticate(self, token: str) -> Identity | None:
        user = self.tokens.get(token)
        return Identity(user, groups=("system:authenticated",)) if user else None

    def allowed(self, who: Identity, check: Check) -> bool:
        self.asked.append((who.username, str(check)))
        resource = check.resource + (f"/{check.subresource}" if check.subresource else "")
        return any(u == who.username and v in (check.verb, "*") and r in (resource, "*") and n in (check.namespace, "*")
                   for u, v, r, n in self.rules)


def tenants() -> tuple[MemorySource, MemoryReviewer]:
    """Two teams' namespaces, ml and team-b; alice may read ml only, the admin everything, mallory nothing."""
    src = world()
    src.training.append(tj("b-secret", {"state": "Running", "reason": "AllPodsRunning"}, namespace="team-b",
                           recipe=None, command=["python", "train.py"], args=["--api-key=b-team-key"]))
    reviewer = MemoryReviewer({"alice-token": "alice", "admin-token": "admin", "mallory-token": "mallory"},
                              {("alice", "*", "*", NS), ("admin", "*", "*", "*")})
    return src, reviewer


# The browser tests: a page on a saturated 2-core machine may take long; waits end when the page is there.
TIMEOUT_MS = 90_000
CHUNK_FAILURE = re.compile(r"Failed to fetch dynamically imported module|error loading dynamically imported module")
Page = Any  # playwright's, imported where used: this module loads without playwright


def settled(page: Page) -> None:
    """Wait until the app has finished its run (Streamlit's status widget shows no running icon)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0)


def visit(page: Page, url: str) -> None:
    """Navigate; again when the navigation was aborted (the network changed, or the page was reloading)."""
    from playwright.sync_api import Error

    for attempt in range(3):
        try:
            page.goto(url)
            return
        except Error:
            if attempt == 2:
                raise


def chunk_failures(page: Page) -> list[str]:
    """The chunk failures the page shows once it has settled (read again if it reloads meanwhile)."""
    from playwright.sync_api import Error

    for _ in range(5):
        settled(page)
        try:
            return [a for a in page.get_by_role("alert").all_inner_texts() if CHUNK_FAILURE.search(a)]
        except Error:  # the page reloaded under the reading
            continue
    raise AssertionError("the page kept reloading")
