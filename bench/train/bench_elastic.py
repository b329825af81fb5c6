"""Elastic resize benchmark on a three-node embedded cluster: how soon an elastic DDP job trains again
after losing a worker's node (3 -> 2 workers, no gang restart) and after the node returns (2 -> 3).

A trial runs a three-node elastic job (`minNodes` 2; a small MLP on digits, CPU, gloo; one worker per
node by anti-affinity), kills the node of node rank 2 once training is under way, times the kill
command's return to rank 0 logging a checkpoint in a 2-rank world (*shrink*), revives the node
(`python -m minicluster node revive`) and times its Ready condition to rank 0 checkpointing in a
3-rank world again (*grow*). A checkpoint comes every 10 steps, so each time also has a *resumed*
form: to rank 0 of the new world logging that it resumed from the checkpoint (its first step next).
A revived node is usable again, so all trials share one cluster. The goals are 10 s each; absolute
times on a shared 2-core machine are context, not a ratio. Writes bench/results/elastic.json."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minicluster.kubeapi import KubeClient, NotFound
from minicluster.launch import RunningCluster, start_cluster
from minicluster.operator_process import OperatorProcess, start_installed

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "elastic.json"
NS = "default"
JOBS = f"/apis/kubeforge.dev/v1alpha1/namespaces/{NS}/trainingjobs"
GOAL_SECONDS = 10.0
Obj = dict[str, Any]


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (NotFound, KeyError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def job(name: str) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"nodes": 3, "elastic": {"minNodes": 2, "maxNodes": 3},
                     "recipe": {"model": "mlp", "dataset": "digits", "batchSize": 60, "epochs": 1000,
                                "maxSteps": 100000, "modelConfig": {"hidden": 512, "layers": 3}},
                     "checkpoint": {"intervalSteps": 10, "keep": 3},
                     "runPolicy": {"cleanPodPolicy": "All"},
                     "storage": {"persistentVolumeClaim": {"claimName": name}, "path": "run"},
                     "podTemplate": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                         [{"labelSelector": {"matchLabels": {"kubeforge.dev/job-name": name}},
                           "topologyKey": "kubernetes.io/hostname"}]}}},
                     "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "2Gi"}}}}


class Trial:
    """One elastic job on the cluster, watched through rank 0's log."""

    def __init__(self, cluster: RunningCluster, api: KubeClient, name: str) -> None:
        self.cluster, self.api, self.name = cluster, api, name
        api.create(f"/api/v1/namespaces/{NS}/persistentvolumeclaims", {
            "metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteMany"],
                                                 "resources": {"requests": {"storage": "50Mi"}}}})
        api.create(JOBS, job(name))

    def log(self) -> str:
        return self.api.text(f"/api/v1/namespaces/{NS}/pods/{self.name}-node-0/log")

    def stepping(self, world: int, after: int, line: str = "checkpoint at step") -> bool:
        """Rank 0's log past `after` shows a `world`-rank worker logging `line`."""
        tail = self.log()[after:]
        start = tail.find(f"rank 0/{world},")
        return start >= 0 and line in tail[start:]

    def times(self, world: int, after: int, t0: float) -> tuple[float, float]:
        """Seconds from `t0` to rank 0 of a `world`-rank world resuming from its checkpoint, and to
        its first checkpoint after that (steps advanced: at most intervalSteps steps later)."""
        wait(lambda: self.stepping(world, after, "resumed from the checkpoint"), 180, f"resuming on {world}")
        resumed = time.monotonic() - t0
        wait(lambda: self.stepping(world, after), 180, f"training on {world}")
        return resumed, time.monotonic() - t0

    def ready(self, node: str) -> bool:
        conds = self.api.get(f"/api/v1/nodes/{node}")["status"].get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def run(self) -> Obj:
        wait(lambda: self.stepping(3, 0), 300, "training on three")
        lost = self.api.get(f"/api/v1/namespaces/{NS}/pods/{self.name}-node-2")["spec"]["nodeName"]
        mark = len(self.log())
        self.cluster.node("kill", lost)
        t0 = time.monotonic()
        shrink_resumed, shrink = self.times(2, mark, t0)
        restarts = int((self.api.get(f"{JOBS}/{self.name}").get("status") or {}).get("restartCount", 0))
        mark = len(self.log())
        self.cluster.node("revive", lost)
        wait(lambda: self.ready(lost), 120, "the node Ready again")
        t1 = time.monotonic()
        grow_resumed, grow = self.times(3, mark, t1)
        return {"node": lost, "shrinkSeconds": round(shrink, 1), "growSeconds": round(grow, 1),
                "shrinkResumedSeconds": round(shrink_resumed, 1), "growResumedSeconds": round(grow_resumed, 1),
                "restartCount": restarts}

    def delete(self) -> None:
        self.api.delete(f"{JOBS}/{self.name}")
        self.api.delete(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{self.name}")


def summary(trials: list[Obj]) -> Obj:
    out: Obj = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "goalSeconds": GOAL_SECONDS, "trials": trials}
    for key in ("shrinkSeconds", "growSeconds", "shrinkResumedSeconds", "growResumedSeconds"):
        values = [t[key] for t in trials]
        out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    cluster = start_cluster(nodes=3, extra=("--no-metrics-server", "--no-object-store", "--no-kube-proxy"))
    op: OperatorProcess | None = None
    try:
        op = start_installed(cluster.kubeconfig, cluster.root, {"KUBEFORGE_LOG_FORMAT": "plain"})
        api = KubeClient.from_kubeconfig(cluster.kubeconfig)
        trials = []
        for i in range(args.trials):
            trial = Trial(cluster, api, f"elastic-{i}")
            trials.append(trial.run())
            print(json.dumps(trials[-1]), flush=True)
            trial.delete()
        RESULTS.write_text(json.dumps(summary(trials), indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(REPO)}")
    finally:
        if op is not None:
            op.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
