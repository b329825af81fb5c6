"""Node loss benchmark on embedded clusters of several nodes: how fast a gang runs again after one of
its nodes dies, how much work it redoes, and whether fencing holds when nodes are killed or cut off.

A trial loses the node of one rank of a running 2-node TrainingJob (alternately rank 0 and rank 1):
a *kill* SIGKILLs the node agent's pods and stops its Lease, a *partition* cuts the node off from the
API server while its pods keep running (healed after the trial). Trials alternate kill, partition.
Each job runs a short step loop in every rank (a step each STEP_SECONDS; rank 0 checkpoints every step
through the trainer's checkpoint module and appends the metrics history through its reporter, rank 1
checks the fence each step), so what is measured is the operator and the fencing, not a model.

Every process writes its own beat file (`beats/r<rank>-a<attempt>-p<pid>.jsonl`: start with the step it
resumed from, each step, fenced), and the benchmark judges everything from those files and the job's
storage:

- recovery: the loss (the moment the kill or partition command returns) to the newest attempt's whole
  gang running (both ranks started) and its rank 0 stepping past the checkpoint it resumed from;
- steps redone: the old attempt's last step before the new one started, minus the step it resumed from;
- double-running ranks: two processes of the same rank whose lives overlap (the older's last beat
  after the newer's first);
- accepted writes from a fenced attempt: checkpoints the loader accepts that an older attempt than the
  fenced one wrote (besides the base it resumed from), and metrics-history points the reader accepts
  from an older attempt past the step the newer one resumed from; also counted for context: commits of
  an old attempt that landed after the newer one started (refused by the loader).

A killed node does not come back, so a cluster of NODES nodes runs trials while at least three nodes
are usable, then a new cluster is started. Writes bench/results/node_loss.json (after every round)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "embedded-cluster"), str(REPO / "operator"), str(REPO / "trainer_image")]

from kubeforge_trainer import checkpoint  # noqa: E402
from kubeforge_trainer.progress import read_history  # noqa: E402
from minicluster.kubeapi import KubeClient  # noqa: E402
from minicluster.launch import RunningCluster, start_cluster  # noqa: E402
from minicluster.operator_process import OperatorProcess, start_installed  # noqa: E402

Obj = dict[str, Any]
NS = "default"
JOBS = f"/apis/kubeforge.dev/v1alpha1/namespaces/{NS}/trainingjobs"
MACHINE = "2-core CPU, embedded control plane (k8s 1.34.4) and node agents on the same machine"
RESULTS = REPO / "bench" / "results" / "node_loss.json"
NODES = 12
STEP_SECONDS = 0.2
SCRIPT = """
import json, os, pathlib, sys, time, torch
from kubeforge_trainer import checkpoint, fencewatch
from kubeforge_trainer.progress import ProgressReporter
fencewatch.enable()  # as the trainer does: a newer attempt's record stops this process within a poll
d = pathlib.Path(os.environ["KUBEFORGE_STORAGE_DIR"]); root = d / "checkpoints"
attempt, rank = int(os.environ["KUBEFORGE_ATTEMPT"]), int(os.environ["KUBEFORGE_ROLE_RANK"])
(d / "beats").mkdir(parents=True, exist_ok=True)
beats = open(d / "beats" / f"r{rank}-a{attempt}-p{os.getpid()}.jsonl", "a", buffering=1)
def beat(event, step):
    beats.write(json.dumps({"t": time.time(), "event": event, "step": step}) + "\\n")
loaded = checkpoint.latest(root)  # records this attempt in the fence first
step = loaded.step if loaded else 0
reporter = ProgressReporter(d / "metrics.jsonl", None, lambda: checkpoint.fenced_out(root)) if rank == 0 else None
if reporter:
    reporter.record("start", step=step, attempt=attempt, resumedFrom=step)
beat("start", step)
while not (d / "stop").exists():
    time.sleep(STEP_SECONDS)
    step += 1
    try:
        if rank == 0:
            checkpoint.save(root, step, {"state": {"step": torch.tensor([step])}}, {}, keep=2)
        else:
            checkpoint.check_fence(root, attempt)
    except checkpoint.Fenced:
        beat("fenced", step)
        sys.exit(1)
    beat("step", step)
    if reporter:
        reporter.record("train", step=step, loss=1.0 / step)
if reporter:
    reporter.close()
""".replace("STEP_SECONDS", str(STEP_SECONDS))


def wait_for(what: str, check: Any, timeout: float, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise TimeoutError(what)


def start_job(api: KubeClient, name: str) -> None:
    api.create(f"/api/v1/namespaces/{NS}/persistentvolumeclaims", {
        "metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteMany"],
                                             "resources": {"requests": {"storage": "10Mi"}}}})
    api.create(JOBS, {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
                      "spec": {"nodes": 2, "command": ["python", "-c", SCRIPT],
                               "runPolicy": {"backoffLimit": 100, "cleanPodPolicy": "None"},
                               "storage": {"persistentVolumeClaim": {"claimName": name}, "path": "run"},
                               "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "1Gi"}}}})


def storage_dir(api: KubeClient, name: str) -> Path:
    def volume() -> str:
        return str(api.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/{name}")["spec"].get("volumeName") or "")
    pv = api.get(f"/api/v1/persistentvolumes/{wait_for('claim bound', volume, 60)}")
    return Path(pv["spec"]["hostPath"]["path"]) / "run"


def beats(storage: Path) -> dict[tuple[int, int, int], list[Obj]]:
    """(rank, attempt, pid) -> that process's beats, in order."""
    out: dict[tuple[int, int, int], list[Obj]] = {}
    for f in (storage / "beats").glob("r*-a*-p*.jsonl"):
        rank, attempt, pid = (int(part[1:]) for part in f.stem.split("-"))
        lines = []
        for line in f.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue  # a torn last line of a killed process
        if lines:
            out[(rank, attempt, pid)] = lines
    return out


def stepping(storage: Path, newer_than: int) -> tuple[int, float, int] | None:
    """(attempt, when, resumed step) once the newest attempt above `newer_than` has both ranks started and
    its rank 0 has stepped past the checkpoint it resumed from; None before."""
    b = beats(storage)
    attempts = sorted({a for (_, a, _) in b if a > newer_than}, reverse=True)
    for attempt in attempts[:1]:
        mine = {r: lines for (r, a, _), lines in b.items() if a == attempt}
        if set(mine) != {0, 1}:
            return None
        zero = mine[0]
        resumed = int(zero[0]["step"])
        past = next((x for x in zero if x["event"] == "step" and x["step"] > resumed), None)
        if past is None:
            return None
        return attempt, max(float(past["t"]), float(mine[1][0]["t"])), resumed
    return None


def running_attempt(storage: Path) -> int:
    found = stepping(storage, -1)
    return found[0] if found else -1


def node_of(api: KubeClient, job: str, rank: int) -> str:
    return str(api.get(f"/api/v1/namespaces/{NS}/pods/{job}-node-{rank}")["spec"]["nodeName"])


def usable(api: KubeClient, node: str) -> bool:
    n = api.get(f"/api/v1/nodes/{node}")
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    return ready and not any("unreachable" in t["key"] or "not-ready" in t["key"] for t in n["spec"].get("taints", []))


def redone(storage: Path, old: int, new: int, started: float, resumed: int) -> int:
    """Steps the new attempt redoes: the old attempts' last step before it started, minus where it resumed."""
    steps = [x["step"] for (r, a, _), lines in beats(storage).items() if r == 0 and old <= a < new
             for x in lines if x["event"] == "step" and x["t"] <= started]
    return max(0, max(steps, default=resumed) - resumed)


class Phases:
    """When each step of a recovery was first seen (polled): the node not Ready, the new attempt's pods
    created, both Running."""

    def __init__(self, api: KubeClient, job: str, storage: Path, node: str, old: int, t0: float) -> None:
        self.api, self.job, self.node, self.old = api, job, node, old
        self.seen: dict[str, float] = {}
        self.next = t0

    def poll(self) -> bool:
        """Look (every quarter second at most); always False, so that a wait goes on to its own check."""
        now = time.time()
        if now < self.next:
            return False
        self.next = now + 0.25
        if "node not ready" not in self.seen and not usable(self.api, self.node):
            self.seen["node not ready"] = now
        pods = self.api.get(f"/api/v1/namespaces/{NS}/pods")["items"]
        new = [q for q in pods if q["metadata"]["name"].startswith(f"{self.job}-node-")
               and int(q["metadata"].get("labels", {}).get("kubeforge.dev/attempt", "-1")) > self.old]
        if len(new) == 2:
            self.seen.setdefault("new pods created", now)
            if all(q["status"].get("phase") == "Running" for q in new):
                self.seen.setdefault("new pods running", now)
        return False


def trial(c: RunningCluster, api: KubeClient, job: str, storage: Path, action: str, rank: int) -> Obj:
    old = running_attempt(storage)
    lost = node_of(api, job, rank)
    load = os.getloadavg()[0]
    c.node(action, lost)
    t0 = time.time()
    phases = Phases(api, job, storage, lost, old, t0)
    attempt, when, resumed = wait_for(f"{job}: a newer attempt stepping after {action} of {lost}",
                                      lambda: phases.poll() or stepping(storage, old), 120)
    moved = all(node_of(api, job, r) != lost for r in (0, 1))
    started = min(float(lines[0]["t"]) for (r, a, _), lines in beats(storage).items() if a == attempt)
    out = {"action": action, "rank": rank, "node": lost, "attempt": attempt, "recovery_s": round(when - t0, 3),
           "steps_redone": redone(storage, old, attempt, started, resumed), "moved": moved, "load_1m": round(load, 2),
           "phases_s": {k: round(v - t0, 3) for k, v in {**phases.seen, "processes started": started}.items()}}
    if action == "partition":
        c.node("heal", lost)
        wait_for(f"{lost} usable again", lambda: usable(api, lost), 90, every=0.5)
    return out


def fencing(storage: Path) -> Obj:
    """Double-running ranks and fenced writes, judged from the beat files and the storage."""
    b = beats(storage)
    lives = sorted((a, r, float(lines[0]["t"]), max(float(x["t"]) for x in lines if x["event"] != "fenced"), lines)
                   for (r, a, _), lines in b.items())  # a life ends at its last step: a fenced beat does no work
    double = sum(1 for i, (a, r, _, end, _) in enumerate(lives) for (a2, r2, start2, _, _) in lives[i + 1:]
                 if r2 == r and a2 > a and end > start2)
    starts = {a: start for a, r, start, _, _ in lives if r == 0}
    landed = sum(1 for a, r, _, _, lines in lives if r == 0 for x in lines if x["event"] == "step"
                 and any(a2 > a and x["t"] > s for a2, s in starts.items()))
    refused = sum(1 for *_, lines in lives for x in lines if x["event"] == "fenced")
    lag = [float(x["t"]) - min((s for a2, s in starts.items() if a2 > a), default=float(x["t"]))
           for a, r, _, _, lines in lives for x in lines if x["event"] == "fenced"]
    root = storage / "checkpoints"
    fence = checkpoint.read_fence(root)
    bad_ckpt = [p.name for p in checkpoint.accepted(root, fence)
                if fence is not None and checkpoint.stamp(p)[1] != fence.attempt and p.name != fence.base]
    return {"double_running": double, "accepted_checkpoints_of_fenced": bad_ckpt,
            "accepted_history_of_fenced": history_violations(storage / "metrics.jsonl"),
            "landed_after_newer_started": landed, "refused": refused,
            "fenced_exit_lag_s": [round(v, 3) for v in lag]}


def history_violations(path: Path) -> int:
    """History points the reader accepts from an attempt past the step a newer attempt resumed from."""
    points = read_history(path)
    resumed = {int(p["attempt"]): int(p["step"]) for p in points if p.get("kind") == "start"}
    return sum(1 for p in points if p.get("kind") == "train"
               and any(a > int(p["attempt"]) and int(p["step"]) > s for a, s in resumed.items()))


def run_trials(c: RunningCluster, api: KubeClient, job: str, storage: Path, trials: list[Obj], budget: int,
               nodes: int) -> None:
    """Trials alternate kill and partition while at least three nodes are usable (a gang of two needs two)."""
    live = nodes
    while live >= 3 and budget > 0:
        action = "kill" if len(trials) % 2 == 0 else "partition"
        rank = (len(trials) // 2) % 2
        try:
            result = trial(c, api, job, storage, action, rank)
        except (TimeoutError, RuntimeError) as e:
            trials.append({"action": action, "rank": rank, "error": str(e)})
            print(f"trial {len(trials)}: {e}", flush=True)
            return
        trials.append(result)
        print(f"trial {len(trials)}: {result}", flush=True)
        live -= action == "kill"
        budget -= 1
        time.sleep(3 * STEP_SECONDS)


def round_(index: int, trials: list[Obj], fences: list[Obj], budget: int, nodes: int, keep: Path | None) -> None:
    """One cluster, one job, trials until the cluster runs short of nodes; the job's fencing is judged
    even when the round is cut short (a failed trial, the benchmark stopped)."""
    c = start_cluster(nodes=nodes, extra=("--no-metrics-server", "--no-object-store", "--no-kube-proxy"))
    op: OperatorProcess | None = None
    job, storage = f"bench-{index}", None
    try:
        op = start_installed(c.kubeconfig, c.root, {
            "KUBEFORGE_RESTART_BACKOFF_SECONDS": "1", "KUBEFORGE_LOG_FORMAT": "plain"})
        api = KubeClient.from_kubeconfig(c.kubeconfig)
        start_job(api, job)
        storage = storage_dir(api, job)
        wait_for(f"{job} running", lambda: running_attempt(storage) >= 0, 180)
        run_trials(c, api, job, storage, trials, budget, nodes)
    finally:
        if storage is not None:
            (storage / "stop").write_text("")
            time.sleep(1)
            fences.append({"job": job, **fencing(storage)})
            print(f"round {index}: {fences[-1]}", flush=True)
        if op is not None:
            op.stop()
        c.stop()
        if keep is not None and trials and "error" in trials[-1]:
            no_secrets = shutil.ignore_patterns("*.sock", "*.kubeconfig", "pki")  # state and logs, never credentials
            shutil.copytree(c.root, keep / job, ignore=no_secrets, dirs_exist_ok=True)
            print(f"round {index}: kept the cluster's state, logs and the job's storage in {keep / job}", flush=True)
        shutil.rmtree(c.root, ignore_errors=True)  # the cluster's state and the jobs' storage


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def dist(values: list[float]) -> Obj:
    if not values:
        return {"n": 0}
    return {"median": statistics.median(values), "p95": percentile(values, 0.95), "min": min(values),
            "max": max(values), "rounds": len(values)}


def summarize(trials: list[Obj], fences: list[Obj], started: float, complete: bool) -> Obj:
    ok = [t for t in trials if "error" not in t]
    kills = [t["recovery_s"] for t in ok if t["action"] == "kill"]
    parts = [t["recovery_s"] for t in ok if t["action"] == "partition"]
    return {
        "machine": MACHINE, "date": f"{datetime.now(UTC):%Y-%m-%d}", "complete": complete,
        "wall_minutes": round((time.monotonic() - started) / 60, 1), "nodes_per_cluster": NODES,
        "load_average_1m": dist([t["load_1m"] for t in trials if "load_1m" in t]),
        "step_seconds": STEP_SECONDS, "checkpoint_every_steps": 1,
        "recovery_kill_s": dist(kills), "recovery_partition_s": dist(parts),
        "steps_redone": dist([float(t["steps_redone"]) for t in ok]),
        "fencing": {"trials": len(ok), "kills": sum(t["action"] == "kill" for t in ok),
                    "partitions": sum(t["action"] == "partition" for t in ok),
                    "failed_trials": len(trials) - len(ok),
                    "gang_not_moved": sum(not t["moved"] for t in ok),
                    "double_running": sum(f["double_running"] for f in fences),
                    "accepted_fenced_writes": sum(len(f["accepted_checkpoints_of_fenced"])
                                                  + f["accepted_history_of_fenced"] for f in fences),
                    "landed_after_newer_started": sum(f["landed_after_newer_started"] for f in fences),
                    "refused": sum(f["refused"] for f in fences),
                    "fenced_exit_lag_s": dist([v for f in fences for v in f["fenced_exit_lag_s"]]), "jobs": fences},
        "trials": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="kills and partitions, alternating (>= 40 kills)")
    parser.add_argument("--nodes", type=int, default=NODES)
    parser.add_argument("--append", action="store_true", help="go on from the trials the results file holds")
    parser.add_argument("--keep-failed", type=Path, help="copy a round's cluster (logs, the job's storage; no "
                                                          "credentials) here when one of its trials fails")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped early: each cluster still goes
    earlier = json.loads(RESULTS.read_text()) if args.append and RESULTS.exists() else {}
    trials: list[Obj] = earlier.get("trials", [])
    fences: list[Obj] = earlier.get("fencing", {}).get("jobs", [])
    started = time.monotonic() - 60 * float(earlier.get("wall_minutes", 0))
    index = len(fences)
    try:
        while len(trials) < args.trials and index < args.trials:
            round_(index, trials, fences, args.trials - len(trials), args.nodes, args.keep_failed)
            RESULTS.write_text(json.dumps(summarize(trials, fences, started, False), indent=1) + "\n")
            index += 1
    finally:  # stopped early too: what was measured is kept, marked incomplete
        done = len([t for t in trials if "error" not in t]) >= args.trials
        RESULTS.write_text(json.dumps(summarize(trials, fences, started, done), indent=1) + "\n")


if __name__ == "__main__":
    main()
