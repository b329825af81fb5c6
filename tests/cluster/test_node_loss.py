"""Node loss, recovered by the operator on a three-node embedded cluster of its own: a gang member on
a killed node restarts the gang on the remaining nodes as a disruption (`NodeLost` in
`status.lastFailure`, a Warning Event naming the node, not counted against `backoffLimit`), the old
pods on the lost node are force-deleted, and the job resumes from its checkpoint and succeeds; a
partitioned node (its processes keep running) is recovered from the same way. Each trial prints the
time from the node's loss to the whole gang running again (context, never asserted).

The job is a command job whose rank 0 counts steps and checkpoints each one through the trainer's
checkpoint module on the job's claim, resuming from the newest it accepts; rank 1 waits for rank 0 to
finish. In the partition the old rank 0 keeps running on the cut-off node: once the next attempt has
recorded itself, its writes are refused (it leaves a marker and stops) and none of its checkpoints
is accepted."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_for
from minicluster.kubeapi import KubeClient
from minicluster.launch import RunningCluster, start_cluster
from minicluster.operator_process import start_installed

pytestmark = [pytest.mark.embedded("kills and partitions nodes under a running TrainingJob"),
              pytest.mark.own_clusters]

NS = "default"
JOBS = f"/apis/kubeforge.dev/v1alpha1/namespaces/{NS}/trainingjobs"
Obj = dict[str, Any]
RECOVERIES: list[float] = []
SCRIPT = """
import os, pathlib, time, torch
from kubeforge_trainer import checkpoint
d = pathlib.Path(os.environ["KUBEFORGE_STORAGE_DIR"]); attempt = os.environ["KUBEFORGE_ATTEMPT"]
root = d / "checkpoints"
if os.environ["KUBEFORGE_ROLE_RANK"] == "0":
    loaded = checkpoint.latest(root)  # records this attempt in the fence first
    step = loaded.step if loaded else 0
    print(f"attempt {attempt} resumed from step {step}", flush=True)
    while step < 60:
        time.sleep(0.5)
        step += 1
        try:
            checkpoint.save(root, step, {"state": {"step": torch.tensor([step])}}, {}, keep=3)
            print(f"checkpoint {step}", flush=True)
        except checkpoint.Fenced:  # a newer attempt started: this one writes nothing more
            (d / f"fenced-a{attempt}-{step}").write_text("")
            raise SystemExit(1)
    stamps = [checkpoint.stamp(p) for p in checkpoint.accepted(root, checkpoint.read_fence(root))]
    print(f"accepted {stamps} fenced {sorted(p.name for p in d.glob('fenced-*'))}", flush=True)
    (d / "done").write_text(attempt)
else:
    while not (d / "done").exists():
        time.sleep(0.5)
"""


@pytest.fixture(scope="module")
def nodes() -> Iterator[RunningCluster]:
    c = start_cluster(nodes=3, extra=("--no-metrics-server", "--no-object-store", "--no-kube-proxy"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def api(nodes: RunningCluster) -> Iterator[KubeClient]:
    op = start_installed(nodes.kubeconfig, nodes.root, {
        "KUBEFORGE_RESTART_BACKOFF_SECONDS": "1", "KUBEFORGE_LOG_FORMAT": "plain"})
    try:
        yield KubeClient.from_kubeconfig(nodes.kubeconfig)
    finally:
        op.stop()
        if RECOVERIES:
            print(f"node loss -> gang running again: p50 {statistics.median(RECOVERIES):.1f} s over "
                  f"{len(RECOVERIES)} trials {[round(r, 1) for r in RECOVERIES]}")


def start_job(api: KubeClient, name: str) -> None:
    api.create(f"/api/v1/namespaces/{NS}/persistentvolumeclaims", {
        "metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteMany"],
                                             "resources": {"requests": {"storage": "10Mi"}}}})
    api.create(JOBS, {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
                      "spec": {"nodes": 2, "command": ["python", "-c", SCRIPT],
                               "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
                               "storage": {"persistentVolumeClaim": {"claimName": name}, "path": "run"},
                               "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "1Gi"}}}})


def gang(api: KubeClient, name: str, attempt: int) -> dict[str, Obj]:
    """The running, not deleted pods of `attempt`, by name."""
    pods = api.get(f"/api/v1/namespaces/{NS}/pods?labelSelector=kubeforge.dev%2Fattempt%3D{attempt}")["items"]
    return {p["metadata"]["name"]: p for p in pods if p["metadata"]["name"].startswith(f"{name}-node-")
            and p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")}


def lose_a_node(nodes: RunningCluster, api: KubeClient, name: str, action: str, rank: int) -> str:
    """Run the job, `action` (kill or partition) the node of its `rank` once it has made progress,
    wait for the next attempt to run everywhere; returns the lost node."""
    start_job(api, name)
    first = wait_for(lambda: len(gang(api, name, 0)) == 2 and gang(api, name, 0), 180, what="attempt 0 running")
    wait_for(lambda: "checkpoint 3\n" in api.text(f"/api/v1/namespaces/{NS}/pods/{name}-node-0/log"), 120,
             what="a few checkpoints")
    lost = first[f"{name}-node-{rank}"]["spec"]["nodeName"]
    nodes.node(action, lost)
    t0 = time.monotonic()
    try:
        wait_for(lambda: len(gang(api, name, 1)) == 2, 180, what="attempt 1 running on the remaining nodes")
    except AssertionError:
        pods = [(q["metadata"]["name"], q["spec"].get("nodeName"), q["status"].get("phase"),
                 q["metadata"].get("deletionTimestamp")) for q in api.get(f"/api/v1/namespaces/{NS}/pods")["items"]]
        raise AssertionError(f"no recovery: job status {api.get(f'{JOBS}/{name}').get('status')}; pods {pods}; "
                             f"operator log {(nodes.root / 'operator.log').read_text()[-3000:]}") from None
    RECOVERIES.append(time.monotonic() - t0)
    print(f"{action} {lost} -> gang running again in {RECOVERIES[-1]:.1f} s")
    assert all(p["spec"]["nodeName"] != lost for p in gang(api, name, 1).values())
    return lost


def finished(api: KubeClient, name: str) -> Obj:
    def done() -> Obj | None:
        status = api.get(f"{JOBS}/{name}").get("status") or {}
        return status if status.get("state") in ("Succeeded", "Failed") else None
    status: Obj = wait_for(done, 240, what=f"{name} to finish")
    return status


def assert_recovered_as_node_lost(api: KubeClient, name: str, lost: str) -> str:
    """Asserts the recovery; returns rank 0's log line of what was accepted and fenced."""
    status = finished(api, name)
    assert status["state"] == "Succeeded", status
    assert status["restartCount"] == 1 and status["disruptions"] == 1, status  # backoffLimit 0: not counted
    assert status["lastFailure"]["reason"] == "NodeLost" and lost in status["lastFailure"]["message"]
    events = api.get(f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name%3D{name}")["items"]
    assert any(e["reason"] == "NodeLost" and lost in e["message"] for e in events), [e["reason"] for e in events]
    log = api.text(f"/api/v1/namespaces/{NS}/pods/{name}-node-0/log")
    resumed = int(log.split("resumed from step ")[-1].split()[0])
    assert "attempt 1 resumed" in log and resumed > 0, log  # from its checkpoint, not from scratch
    summary = log.split("accepted ")[-1]
    accepted = re.findall(r"\((\d+), (\d+)\)", summary.split("]")[0])
    assert accepted and all(attempt == "1" for _, attempt in accepted), summary  # only the last attempt's
    return summary


def test_a_gang_member_on_a_killed_node_restarts_elsewhere_as_a_disruption(
        nodes: RunningCluster, api: KubeClient) -> None:
    lost = lose_a_node(nodes, api, "killed", "kill", rank=1)
    pods = api.get(f"/api/v1/namespaces/{NS}/pods")["items"]
    assert not [p for p in pods if p["spec"].get("nodeName") == lost and p["metadata"]["name"].startswith("killed")]
    assert "fenced []" in assert_recovered_as_node_lost(api, "killed", lost)


def test_the_old_rank_on_a_partitioned_node_keeps_running_but_is_fenced(nodes: RunningCluster,
                                                                         api: KubeClient) -> None:
    lost = lose_a_node(nodes, api, "partitioned", "partition", rank=0)
    try:
        summary = assert_recovered_as_node_lost(api, "partitioned", lost)
        assert "fenced-a0-" in summary, summary  # it wrote on after the next attempt began and was refused
    finally:
        nodes.node("heal", lost)
