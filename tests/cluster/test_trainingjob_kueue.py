"""TrainingJobs queued by Kueue's real manager (v0.17): a labelled job gets a Workload, waits `Queued`
with Kueue's reason while its ClusterQueue has no quota left, runs on the admitted ResourceFlavor's
nodes once admitted, and marks its Workload Finished when it ends (which lets the next job in); a
high-priority job preempts a low-priority one, which stops, gives its quota back, is admitted again
once the preemptor finished and resumes from its checkpoint, the preemption not counted against
`backoffLimit`. Latencies (create -> Admitted, Admitted -> all ranks Running, the preemption round
trip) are printed as context, never asserted."""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Cluster, KueueHarness, condition, job, pod_logs, wait_condition, wait_for
from minicluster.operator_process import OperatorProcess

Obj = dict[str, Any]
TJ = "/apis/kubeforge.dev/v1alpha1/namespaces/{ns}/trainingjobs"
RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}  # torch fits
SLEEP = "import time; time.sleep({})"
# Rank 0 counts steps, checkpointing each through the trainer's checkpoint module on the job's claim,
# and resumes from the newest checkpoint it accepts (what a preempted training job does).
CHECKPOINTING = """
import os, pathlib, time, torch
from kubeforge_trainer import checkpoint
root = pathlib.Path(os.environ["KUBEFORGE_STORAGE_DIR"]) / "checkpoints"
loaded = checkpoint.latest(root)
step = loaded.step if loaded else 0
print(f"attempt {os.environ['KUBEFORGE_ATTEMPT']} resumed from step {step}", flush=True)
while step < 25:
    time.sleep(0.3)
    step += 1
    checkpoint.save(root, step, {"state": {"step": torch.tensor([step])}}, {}, keep=2)
    print(f"checkpoint {step}", flush=True)
"""


@pytest.fixture
def queued(kueue: KueueHarness, operator: OperatorProcess | None) -> KueueHarness:
    """Kueue, and an operator that saw it at start (it detects Kueue once: one started before Kueue's
    CRDs were installed is started again)."""
    if operator is not None:
        seen = [line for line in operator.log_path.read_text(errors="replace").splitlines()
                if "Kueue's Workload API" in line]
        if not seen or " is served" not in seen[-1]:
            operator.kill(signal.SIGTERM)
            operator.start()
    return kueue


def create(cluster: Cluster, ns: str, name: str, script: str, queue: str, priority: str = "", **spec: Any) -> Obj:
    labels = {"kueue.x-k8s.io/queue-name": queue} | ({"kueue.x-k8s.io/priority-class": priority} if priority else {})
    return cluster.client.create(TJ.format(ns=ns), {
        "apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name, "labels": labels},
        "spec": {"nodes": 1, "command": ["python", "-c", script], "resources": RESOURCES,
                 "runPolicy": {"backoffLimit": 0}, **spec}})


def workload_of(created: Obj) -> str:
    return f"trainingjob-{created['metadata']['name']}-{created['metadata']['uid'][:5]}"


def explain(cluster: Cluster, ns: str) -> str:
    """What the jobs, their Workloads and pods say (for a failed wait)."""
    jobs = {j["metadata"]["name"]: j.get("status") for j in cluster.client.get(TJ.format(ns=ns))["items"]}
    wls = {w["metadata"]["name"]: w.get("status") for w in cluster.client.get(
        f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{ns}/workloads")["items"]}
    pods = {p["metadata"]["name"]: (p["status"].get("phase"), p["metadata"].get("deletionTimestamp"))
            for p in cluster.client.get(f"/api/v1/namespaces/{ns}/pods")["items"]}
    return f"jobs {jobs}\nworkloads {wls}\npods {pods}"


def waiting(cluster: Cluster, ns: str, predicate: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    try:
        return wait_for(predicate, timeout, interval=interval, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{explain(cluster, ns)}") from None


def queued_why(cluster: Cluster, ns: str, name: str) -> Obj | None:
    c = condition(job(cluster, ns, name), "Queued")
    return c if c is not None and c["status"] == "True" else None


def test_jobs_wait_for_quota_run_on_the_admitted_flavor_and_release_it(
        queued: KueueHarness, cluster: Cluster, namespace: str) -> None:
    q = queued.queues(namespace, cpu="200m", memory="1Gi")  # room for two of these jobs
    node = cluster.client.get("/api/v1/nodes")["items"][0]["metadata"]["labels"]["kubernetes.io/hostname"]
    cluster.client.patch(queued.path("resourceflavors", name=q.flavor),
                         {"spec": {"nodeLabels": {"kubernetes.io/hostname": node}}})
    t0 = time.monotonic()
    first = create(cluster, namespace, "first", SLEEP.format(4), q.local_queue)
    queued.wait_admitted(namespace, workload_of(first))
    admitted = time.monotonic()
    wait_condition(cluster, namespace, "first", "Running", timeout=60)
    running = time.monotonic()
    print(f"\nKueue: create -> Admitted {admitted - t0:.2f} s, Admitted -> all ranks Running "
          f"{running - admitted:.2f} s")
    create(cluster, namespace, "second", SLEEP.format(4), q.local_queue)
    time.sleep(0.5)  # the third comes last in the queue
    create(cluster, namespace, "third", SLEEP.format(1), q.local_queue)

    why = wait_for(lambda: queued_why(cluster, namespace, "third"), 30, what="third Queued with Kueue's reason")
    if why["reason"] != "Pending" or "insufficient" not in why["message"]:  # first seen: before Kueue's verdict
        why = wait_for(lambda: (c := queued_why(cluster, namespace, "third")) and "insufficient" in c["message"]
                       and c, 30, what="Kueue's reason on third")
    assert why["reason"] == "Pending" and "insufficient unused quota" in why["message"], why
    assert job(cluster, namespace, "third")["status"]["state"] == "Queued"
    assert not cluster.client.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector=kubeforge.dev%2Fjob-name%3D"
                                  f"third")["items"]
    pod = cluster.client.get(f"/api/v1/namespaces/{namespace}/pods/first-node-0")
    assert pod["spec"]["nodeSelector"]["kubernetes.io/hostname"] == node  # the admitted flavor's node labels

    done = wait_condition(cluster, namespace, "third", "Succeeded", timeout=120)
    assert (condition(done, "Queued") or {}).get("reason") == "Admitted", done["status"]
    finished = condition(queued.workload(namespace, workload_of(first)), "Finished")
    assert finished is not None and finished["status"] == "True" and finished["reason"] == "Succeeded", finished


@pytest.fixture
def priorities(queued: KueueHarness) -> Iterator[tuple[str, str]]:
    """A low and a high WorkloadPriorityClass of their own (cluster-scoped: deleted at the end)."""
    names = (f"kf-low-{uuid.uuid4().hex[:6]}", f"kf-high-{uuid.uuid4().hex[:6]}")
    for name, value in zip(names, (10, 1000), strict=True):
        queued.cluster.client.create(queued.path("workloadpriorityclasses"), {
            "apiVersion": queued.api_version, "kind": "WorkloadPriorityClass", "metadata": {"name": name},
            "value": value})
    yield names
    for name in names:
        queued.cluster.client.delete(queued.path("workloadpriorityclasses", name=name))


def test_a_preempted_job_gives_way_then_resumes_from_its_checkpoint(
        queued: KueueHarness, priorities: tuple[str, str], cluster: Cluster, namespace: str) -> None:
    low, high = priorities
    q = queued.queues(namespace, cpu="100m", memory="1Gi", preemption={"withinClusterQueue": "LowerPriority"})
    cluster.client.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
        "metadata": {"name": "low"}, "spec": {"accessModes": ["ReadWriteMany"],
                                              "resources": {"requests": {"storage": "10Mi"}}}})
    create(cluster, namespace, "low", CHECKPOINTING, q.local_queue, low,
           storage={"persistentVolumeClaim": {"claimName": "low"}},
           runPolicy={"backoffLimit": 0, "cleanPodPolicy": "None"})
    waiting(cluster, namespace, lambda: "checkpoint 3\n" in pod_logs(cluster, namespace, "low-node-0"), 120,
            "low checkpointing")

    t0 = time.monotonic()
    create(cluster, namespace, "high", SLEEP.format(2), q.local_queue, high)
    evicted = waiting(cluster, namespace, lambda: (job(cluster, namespace, "low")["status"].get("lastFailure") or {})
                      .get("reason") == "Evicted" and time.monotonic(), 60, "low evicted", interval=0.05)
    low_wl = workload_of(job(cluster, namespace, "low"))
    waiting(cluster, namespace, lambda: not queued.workload(namespace, low_wl)["status"].get("admission"), 60,
            "low's admission given back", 0.05)
    released = time.monotonic()
    wait_condition(cluster, namespace, "high", "Running", timeout=60)
    high_running = time.monotonic()
    wait_condition(cluster, namespace, "high", "Succeeded", timeout=60)
    high_done = time.monotonic()
    waiting(cluster, namespace, lambda: queued.admitted(queued.workload(namespace, low_wl)), 120, "low re-admitted",
            0.05)
    readmitted = time.monotonic()
    waiting(cluster, namespace, lambda: job(cluster, namespace, "low")["status"].get("state") == "Running"
            and job(cluster, namespace, "low")["status"].get("restartCount") == 1, 120, "low running again", 0.1)
    back = time.monotonic()
    print(f"\nKueue preemption: high created -> low evicted {evicted - t0:.2f} s, -> low's pods gone and its quota "
          f"given back {released - t0:.2f} s, -> high running "
          f"{high_running - t0:.2f} s; low evicted -> running again {back - evicted:.2f} s (high succeeded -> low "
          f"re-admitted {readmitted - high_done:.2f} s, -> low running {back - readmitted:.2f} s)")

    status = wait_condition(cluster, namespace, "low", "Succeeded", timeout=120)["status"]
    assert status["restartCount"] == 1 and status["disruptions"] == 1, status  # backoffLimit 0: not counted
    assert status["lastFailure"]["reason"] == "Evicted" and "Preempted" in status["lastFailure"]["message"], status
    resumed = re.search(r"attempt 1 resumed from step (\d+)", pod_logs(cluster, namespace, "low-node-0"))
    assert resumed is not None and int(resumed.group(1)) >= 3, pod_logs(cluster, namespace, "low-node-0")
    events = cluster.client.get(f"/api/v1/namespaces/{namespace}/events?fieldSelector=reason%3DEvicted")["items"]
    assert any(e["involvedObject"]["name"] == "low" and e["type"] == "Warning" for e in events), events


def test_suspending_a_queued_job_gives_its_quota_to_the_next(queued: KueueHarness, cluster: Cluster,
                                                              namespace: str) -> None:
    q = queued.queues(namespace, cpu="100m", memory="1Gi")  # room for one job
    first = create(cluster, namespace, "first", SLEEP.format(6), q.local_queue)
    wait_condition(cluster, namespace, "first", "Running", timeout=60)
    create(cluster, namespace, "second", SLEEP.format(1), q.local_queue)
    waiting(cluster, namespace, lambda: queued_why(cluster, namespace, "second"), 30, "second Queued")
    cluster.client.patch(f"{TJ.format(ns=namespace)}/first", {"spec": {"runPolicy": {"suspend": True}}})
    wait_condition(cluster, namespace, "second", "Succeeded", timeout=60)  # first's quota went back
    assert queued.workload(namespace, workload_of(first))["spec"]["active"] is False
    assert job(cluster, namespace, "first")["status"]["state"] == "Suspended"
    cluster.client.patch(f"{TJ.format(ns=namespace)}/first", {"spec": {"runPolicy": {"suspend": False}}})
    wait_condition(cluster, namespace, "first", "Succeeded", timeout=90)
    assert queued.workload(namespace, workload_of(first))["spec"]["active"] is True
