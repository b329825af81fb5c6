"""Elastic training end to end on a three-node embedded cluster of its own: a three-node elastic DDP
job (`spec.elastic` minNodes 2, maxNodes 3; a small MLP on CPU over gloo) loses the node of a worker
that is not node rank 0 (killed: its processes die); the survivors re-rendezvous and train on two
(no gang restart: `restartCount` stays 0, Running says `Resized`), the lost pod is recreated and
waits for capacity; the node is revived, the pod schedules there and joins, all three
re-rendezvous and the job succeeds. Its loss curve (`status.history`) has each step once, in order,
and rank 0's log shows the world sizes 3, 2, 3. Prints the time from the kill to training steps
advancing on two workers, and from the node being Ready again to steps advancing on three (context,
never asserted; the goal is 10 s each)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_for
from kubeforge_api.curves import decode
from minicluster.kubeapi import KubeClient
from minicluster.launch import RunningCluster, start_cluster
from minicluster.operator_process import start_installed

pytestmark = [pytest.mark.embedded("kills and revives a node under a running elastic TrainingJob"),
              pytest.mark.own_clusters]

NS = "default"
JOBS = f"/apis/kubeforge.dev/v1alpha1/namespaces/{NS}/trainingjobs"
NAME = "elastic"
Obj = dict[str, Any]


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
        "KUBEFORGE_RESTART_BACKOFF_SECONDS": "1", "KUBEFORGE_PROGRESS_INTERVAL_SECONDS": "1",
        "KUBEFORGE_LOG_FORMAT": "plain"})
    try:
        yield KubeClient.from_kubeconfig(nodes.kubeconfig)
    finally:
        op.stop()


def start_job(api: KubeClient) -> None:
    api.create(f"/api/v1/namespaces/{NS}/persistentvolumeclaims", {
        "metadata": {"name": NAME}, "spec": {"accessModes": ["ReadWriteMany"],
                                             "resources": {"requests": {"storage": "50Mi"}}}})
    api.create(JOBS, {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": NAME},
                      "spec": {"nodes": 3, "elastic": {"minNodes": 2, "maxNodes": 3},
                               "recipe": {"model": "mlp", "dataset": "digits", "batchSize": 60, "epochs": 100,
                                          "maxSteps": 300, "learningRate": 0.001,
                                          "modelConfig": {"hidden": 512, "layers": 3}},
                               "checkpoint": {"intervalSteps": 10, "keep": 3},
                               "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
                               "storage": {"persistentVolumeClaim": {"claimName": NAME}, "path": "run"},
                               # one worker per node: a lost node's pod waits for the node to return
                               "podTemplate": {"affinity": {"podAntiAffinity": {
                                   "requiredDuringSchedulingIgnoredDuringExecution": [{
                                       "labelSelector": {"matchLabels": {"kubeforge.dev/job-name": NAME}},
                                       "topologyKey": "kubernetes.io/hostname"}]}}},
                               "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "2Gi"}}}})


def pods(api: KubeClient) -> dict[str, Obj]:
    items = api.get(f"/api/v1/namespaces/{NS}/pods?labelSelector=kubeforge.dev%2Fjob-name%3D{NAME}")["items"]
    return {p["metadata"]["name"]: p for p in items}


def running(api: KubeClient) -> dict[str, Obj]:
    return {n: p for n, p in pods(api).items()
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")}


def log(api: KubeClient) -> str:
    return api.text(f"/api/v1/namespaces/{NS}/pods/{NAME}-node-0/log")


def status(api: KubeClient) -> Obj:
    return api.get(f"{JOBS}/{NAME}").get("status") or {}


def steps_advance_on(api: KubeClient, world: int, after: int) -> bool:
    """Rank 0's log, past character `after`, shows a worker of a `world`-rank world checkpointing."""
    tail = log(api)[after:]
    start = tail.find(f"rank 0/{world},")
    return start >= 0 and "checkpoint at step" in tail[start:]


def node_ready(api: KubeClient, node: str) -> bool:
    conds = api.get(f"/api/v1/nodes/{node}")["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def diagnose(api: KubeClient, nodes: RunningCluster) -> str:
    listed = [(n, p["spec"].get("nodeName"), p["status"].get("phase"), p["metadata"].get("deletionTimestamp"))
              for n, p in pods(api).items()]
    return (f"status {status(api)}; pods {listed}; rank 0 log {log(api)[-3000:]}; "
            f"operator log {(nodes.root / 'operator.log').read_text()[-2000:]}")


def test_an_elastic_job_shrinks_on_node_loss_and_grows_back_without_a_restart(nodes: RunningCluster,
                                                                              api: KubeClient) -> None:
    start_job(api)
    try:
        first = wait_for(lambda: len(running(api)) == 3 and running(api), 120, what="three workers running")
        wait_for(lambda: steps_advance_on(api, 3, 0), 120, what="training on three")
        lost = first[f"{NAME}-node-2"]["spec"]["nodeName"]
        mark = len(log(api))
        nodes.node("kill", lost)
        t0 = time.monotonic()
        wait_for(lambda: steps_advance_on(api, 2, mark), 120, what="training on two")
        shrink = time.monotonic() - t0
        print(f"kill -> steps advance on 2 workers in {shrink:.1f} s")
        wait_for(lambda: status(api).get("state") == "Running" and
                 any(c["reason"] == "Resized" for c in status(api).get("conditions") or []), 30, what="Resized")
        assert status(api)["restartCount"] == 0, status(api)
        wait_for(lambda: (p := pods(api).get(f"{NAME}-node-2")) and p["status"].get("phase") == "Pending",
                 60, what="the lost worker recreated, waiting for capacity")
        mark = len(log(api))
        nodes.node("revive", lost)
        wait_for(lambda: node_ready(api, lost), 60, what="the node Ready again")
        t1 = time.monotonic()
        wait_for(lambda: steps_advance_on(api, 3, mark), 120, what="training on three again")
        grow = time.monotonic() - t1
    except AssertionError as e:
        raise AssertionError(f"{e}: {diagnose(api, nodes)}") from None
    print(f"elastic resize: kill -> steps advance on 2 workers {shrink:.1f} s (goal 10 s); "
          f"node Ready -> steps advance on 3 workers {grow:.1f} s (goal 10 s)")
    done: Obj = wait_for(lambda: (s := status(api)).get("state") in ("Succeeded", "Failed") and s, 400,
                         what="the job to finish")
    assert done["state"] == "Succeeded" and done["restartCount"] == 0, done
    assert pods(api)[f"{NAME}-node-2"]["spec"]["nodeName"] == lost  # rejoined on the revived node
    worlds = [int(w) for w in re.findall(r"rank 0/(\d+),", log(api))]
    assert worlds[0] == 3 and 2 in worlds and worlds[-1] == 3, worlds
    curve = [step for step, _ in decode(done["history"]["loss"])]
    assert curve == sorted(set(curve)) and curve[-1] == 300, curve  # each step once, in order, to the end
    events = api.get(f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name%3D{NAME}")["items"]
    assert any(e["reason"] == "Resized" for e in events), [e["reason"] for e in events]
