"""Kueue benchmark on the embedded cluster, with Kueue's real manager (v0.17) and the operator: how
fast a queued TrainingJob is admitted and starts, how fast a high-priority job preempts a running one
and what the victim loses, and how many small jobs one ClusterQueue gets through.

Every time is taken on this process's monotonic clock: a start is the moment the create call is
made (object timestamps have one-second resolution), an end is the moment a watch (one each on the
namespace's TrainingJobs, Workloads and pods) delivers the change. Parts:

- latency: one 2-node command job at a time on an idle queue: create call -> its Workload's Admitted
  condition True, and Admitted -> both pods' phase Running; each job ends before the next starts.
- preemption: a 1-node recipe job (a small MLP on digits, low priority, no periodic checkpoint) holds
  the whole quota of a ClusterQueue that preempts within itself; once it has trained a few steps a
  high-priority 1-node job is created. Round trip: create call -> the high job's Workload Admitted and
  every pod of the victim stopped (terminal phase or deleted). Steps lost: the victim's last step
  trained before eviction (its metrics history, a point every step) minus the step its next attempt
  resumed from (that attempt's start record); the trainer checkpoints the step it is at on SIGTERM.
- throughput: N one-pod jobs (`sh -c` appending one line to a marker file on a shared claim) created
  at once (4 client threads) into a ClusterQueue that admits QUOTA at a time: create of the first ->
  the last Succeeded. Lost: jobs not Succeeded; run twice: jobs with more than one pod, a container
  restart or more than one marker line (and the jobs' restartCounts, summed). Nothing is deleted
  during the run; the API server's latency (a GET every second) and the operator's peak RSS are
  recorded. Run twice: with a small image of its own (`spec.image`: the command runs bare), then on
  the trainer image, where the command runs under the trainer's command wrapper (a Python process:
  ~0.25 s of CPU a pod here), the second on a fresh cluster (its node agent keeps a finished pod's
  network link until the pod is deleted, and the bridge takes 1,024: one node holds ~1,000 pods).

Writes bench/results/kueue.json after every part (and the throughput part every 10 s while it runs);
SIGTERM stops it cleanly, keeping what was measured."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from minicluster.kubeapi import ApiError, Informer, KubeClient
from minicluster.launch import start_cluster
from minicluster.operator_process import OperatorProcess, start_installed

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "kueue.json"
MACHINE = "2-core CPU, embedded control plane (k8s 1.34.4), Kueue v0.17.0 and one node agent on the same machine"
NS = "default"
API = "kueue.x-k8s.io/v1beta2"
KUEUE = f"/apis/{API}"
JOBS = f"/apis/kubeforge.dev/v1alpha1/namespaces/{NS}/trainingjobs"
CLAIMS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
SLEEP = ["python", "-c", "import time; time.sleep(1)"]
MARK = ["sh", "-c", 'echo "$KUBEFORGE_ATTEMPT" >> "$KUBEFORGE_STORAGE_DIR/ran"']
VICTIM_STEPS = 400  # <= 799: the trainer records a history point every step
RESULT: Obj = {"machine": MACHINE, "date": f"{datetime.now(UTC):%Y-%m-%d}"}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def dist(values: list[float], digits: int = 3) -> Obj:
    if not values:
        return {"rounds": 0}
    return {k: round(v, digits) for k, v in (("median", statistics.median(values)), ("p95", percentile(values, 0.95)),
                                             ("min", min(values)), ("max", max(values)))} | {"rounds": len(values)}


def save() -> None:
    RESULTS.write_text(json.dumps(RESULT, indent=1) + "\n")


def wait(what: str, check: Callable[[], Any], timeout: float, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def true_conditions(obj: Obj) -> set[str]:
    return {c["type"] for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


@dataclass
class Pod:
    job: str
    running: float | None = None
    ended: float | None = None
    restarts: int = 0
    exit_code: int | None = None


@dataclass
class Seen:
    """What the watches saw, with this process's monotonic time of each change."""

    edges: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # job -> (time, what became true)
    pods: dict[str, Pod] = field(default_factory=dict)  # by uid
    state: dict[str, set[str]] = field(default_factory=dict)  # uid -> true conditions last seen
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _edges(self, job: str, obj: Obj, now: float, prefix: str, extra: set[str]) -> None:
        uid = obj["metadata"]["uid"]
        true = true_conditions(obj) | extra
        for what in sorted(true - self.state.get(uid, set())):
            self.edges.setdefault(job, []).append((now, prefix + what))
        self.state[uid] = true

    def workload(self, etype: str, obj: Obj) -> None:
        owner = next((o["name"] for o in obj["metadata"].get("ownerReferences") or [] if o["kind"] == "TrainingJob"),
                     None)
        if owner is not None and etype != "DELETED":
            with self.lock:
                self._edges(owner, obj, time.monotonic(), "wl:", {"Created"})

    def job(self, etype: str, obj: Obj) -> None:
        if etype != "DELETED":
            with self.lock:
                self._edges(obj["metadata"]["name"], obj, time.monotonic(), "", set())

    def pod(self, etype: str, obj: Obj) -> None:
        now, meta = time.monotonic(), obj["metadata"]
        job = (meta.get("labels") or {}).get("kubeforge.dev/job-name")
        if job is None:
            return
        with self.lock:
            p = self.pods.setdefault(meta["uid"], Pod(job))
            phase = (obj.get("status") or {}).get("phase")
            statuses = (obj.get("status") or {}).get("containerStatuses") or []
            p.restarts = max([p.restarts, *(int(s.get("restartCount", 0)) for s in statuses)])
            if phase == "Running" and p.running is None:
                p.running = now
            for s in statuses:
                code = ((s.get("state") or {}).get("terminated") or {}).get("exitCode")
                p.exit_code = p.exit_code if code is None else int(code)
            if (phase in ("Succeeded", "Failed") or etype == "DELETED") and p.ended is None:
                p.ended = now

    def first(self, job: str, what: str, after: float = 0.0) -> float | None:
        with self.lock:
            return next((t for t, w in self.edges.get(job, []) if w == what and t >= after), None)

    def pods_of(self, job: str) -> list[Pod]:
        with self.lock:
            return [p for p in self.pods.values() if p.job == job]


class Bench:
    def __init__(self, api: KubeClient, seen: Seen, op: OperatorProcess) -> None:
        self.api, self.seen, self.op = api, seen, op

    def kueue(self, plural: str, kind: str, name: str, namespaced: bool = False, **fields: Any) -> None:
        where = f"{KUEUE}/namespaces/{NS}" if namespaced else KUEUE
        self.api.create(f"{where}/{plural}", {"apiVersion": API, "kind": kind, "metadata": {"name": name}, **fields})

    def queue(self, name: str, cpu: str, memory: str, preemption: Obj | None = None) -> str:
        """A ResourceFlavor, a ClusterQueue `name` with these quotas and a LocalQueue `name` pointing at it."""
        self.kueue("resourceflavors", "ResourceFlavor", name)
        quotas = [{"name": "cpu", "nominalQuota": cpu}, {"name": "memory", "nominalQuota": memory}]
        spec: Obj = {"namespaceSelector": {}, "resourceGroups": [
            {"coveredResources": ["cpu", "memory"], "flavors": [{"name": name, "resources": quotas}]}]}
        spec |= {"preemption": preemption} if preemption else {}
        self.kueue("clusterqueues", "ClusterQueue", name, spec=spec)
        self.kueue("localqueues", "LocalQueue", name, True, spec={"clusterQueue": name})
        wait(f"queue {name} active", lambda: "Active" in true_conditions(
            self.api.get(f"{KUEUE}/namespaces/{NS}/localqueues/{name}")), 60, 0.2)
        return name

    def create(self, name: str, queue: str, nodes: int, cpu: str, priority: str = "", **spec: Any) -> float:
        """Create a queued job; the monotonic time the call was made."""
        labels = {"kueue.x-k8s.io/queue-name": queue}
        labels |= {"kueue.x-k8s.io/priority-class": priority} if priority else {}
        body = {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
                "metadata": {"name": name, "labels": labels},
                "spec": {"nodes": nodes, "resources": {"requests": {"cpu": cpu, "memory": "64Mi"},
                                                       "limits": {"memory": "2Gi"}}} | spec}
        t0 = time.monotonic()
        self.api.create(JOBS, body)
        return t0

    def claim(self, name: str) -> Path:
        """A claim and the host directory of its volume."""
        self.api.create(CLAIMS, {"metadata": {"name": name}, "spec": {
            "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "100Mi"}}}})
        volume = wait("claim bound", lambda: self.api.get(f"{CLAIMS}/{name}")["spec"].get("volumeName"), 60, 0.2)
        return Path(self.api.get(f"/api/v1/persistentvolumes/{volume}")["spec"]["hostPath"]["path"])

    def gone(self, job: str) -> None:
        self.api.delete(f"{JOBS}/{job}")

    def all_running(self, job: str, nodes: int, after: float) -> float | None:
        times = [p.running for p in self.seen.pods_of(job)]
        return max(t for t in times if t) if len(times) >= nodes and all(t and t >= after for t in times) else None

    def latency(self, n: int) -> None:
        queue = self.queue("idle", "8", "16Gi")
        trials = []
        for i in range(n):
            job = f"lat-{i}"
            t0 = self.create(job, queue, 2, "100m", command=SLEEP)
            returned = time.monotonic()
            admitted = wait(f"{job} admitted", partial(self.seen.first, job, "wl:Admitted"), 60)
            running = wait(f"{job} running", partial(self.all_running, job, 2, admitted), 60)
            created = self.seen.first(job, "wl:Created") or admitted
            trials.append({"job": job, "admitted_s": round(admitted - t0, 4), "admitted_after_return_s":
                           round(admitted - returned, 4), "workload_created_s": round(created - t0, 4),
                           "running_after_admitted_s": round(running - admitted, 4), "load_1m": load()})
            print(json.dumps(trials[-1]), flush=True)
            wait(f"{job} succeeded", partial(self.seen.first, job, "Succeeded"), 120, 0.1)
            self.gone(job)
        RESULT["latency"] = {"jobs": n, "nodes_per_job": 2, "trials": trials, **{
            key: dist([t[key] for t in trials], 4) for key in ("admitted_s", "admitted_after_return_s",
                                                               "workload_created_s", "running_after_admitted_s")}}
        save()

    def preemption(self, n: int) -> None:
        for name, value in (("low", 10), ("high", 1000)):
            self.kueue("workloadpriorityclasses", "WorkloadPriorityClass", name, value=value)
        queue = self.queue("preempt", "200m", "4Gi", {"withinClusterQueue": "LowerPriority"})
        trials: list[Obj] = []
        for i in range(n):
            try:
                trials.append(self.preempt_once(i, queue))
            except (TimeoutError, ApiError) as e:
                trials.append({"trial": i, "error": str(e)[:300]})
            print(json.dumps(trials[-1]), flush=True)
            ok = [t for t in trials if "error" not in t]
            RESULT["preemption"] = {"trials": trials, "round_trip_s": dist([t["round_trip_s"] for t in ok]),
                                    "steps_lost": dist([float(t["steps_lost"]) for t in ok], 0),
                                    "victim_steps": VICTIM_STEPS}
            save()

    def preempt_once(self, i: int, queue: str) -> Obj:
        victim, high = f"victim-{i}", f"high-{i}"
        history = self.claim(victim) / "run" / "metrics.jsonl"
        self.create(victim, queue, 1, "200m", "low", storage={"persistentVolumeClaim": {"claimName": victim},
                                                              "path": "run"},
                    recipe={"model": "mlp", "dataset": "digits", "batchSize": 128, "epochs": 10000,
                            "maxSteps": VICTIM_STEPS, "modelConfig": {"hidden": 1024, "layers": 3}},
                    checkpoint={"intervalSteps": 1000000, "keep": 2}, runPolicy={"cleanPodPolicy": "None"})

        def points() -> list[Obj]:
            return [json.loads(line) for line in history.read_text().splitlines() if line.endswith("}")] \
                if history.exists() else []

        wait(f"{victim} training", lambda: any(p.get("kind") == "train" and p["step"] >= 20 for p in points()), 300,
             0.2)
        before, first = load(), self.seen.pods_of(victim)
        t0 = self.create(high, queue, 1, "200m", "high", command=SLEEP)
        admitted = wait(f"{high} admitted", lambda: self.seen.first(high, "wl:Admitted"), 120)
        stopped = wait(f"{victim}'s pods stopped", lambda: all(p.ended for p in first)
                       and max(p.ended or 0 for p in first), 120)
        evicted = self.seen.first(victim, "wl:Evicted") or t0
        running = wait(f"{high} running", lambda: self.all_running(high, 1, t0), 120)
        resumed = wait(f"{victim} resumed", lambda: next((p for p in points() if p.get("kind") == "start"
                                                          and p.get("attempt") == 1), None), 300, 0.2)
        trained = max(p["step"] for p in points() if p.get("kind") == "train" and p.get("attempt") == 0)
        steps = [p for p in points() if p.get("kind") == "train" and p.get("attempt") == 0]
        per_s = (steps[-1]["step"] - steps[0]["step"]) / max(1e-3, steps[-1]["time"] - steps[0]["time"])
        self.gone(victim)
        self.gone(high)
        self.api.delete(f"{CLAIMS}/{victim}")
        return {"trial": i, "round_trip_s": round(max(admitted, stopped) - t0, 3),
                "evicted_s": round(evicted - t0, 3), "victim_stopped_s": round(stopped - t0, 3),
                "admitted_s": round(admitted - t0, 3), "high_running_s": round(running - t0, 3),
                "last_step_trained": trained, "resumed_from": resumed.get("resumedFrom"),
                "steps_lost": trained - int(resumed.get("resumedFrom") or 0),
                "victim_exit_codes": [p.exit_code for p in first], "victim_steps_per_s": round(per_s, 1),
                "load_1m": before}

    def probe_api(self, done: threading.Event, probes: list[float], loads: list[float]) -> None:
        """Each second until `done`: the API server's latency for one GET, and the load average."""
        while not done.wait(1.0):
            t = time.monotonic()
            self.api.get(f"/api/v1/namespaces/{NS}")
            probes.append(time.monotonic() - t)
            loads.append(load())

    def create_marking_job(self, name: str, queue: str, image: str | None) -> str:
        """Create one one-pod job in `queue` whose command leaves a mark on the queue's claim; the
        API server's refusal in one line, or "" when created."""
        try:
            self.api.create(JOBS, {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob",
                                   "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": queue}},
                                   "spec": {"nodes": 1, "command": MARK, "runPolicy": {"backoffLimit": 0},
                                            **({"image": image} if image else {}),
                                            "storage": {"persistentVolumeClaim": {"claimName": f"marks-{queue}"}},
                                            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"},
                                                          "limits": {"memory": "512Mi"}}}})
            return ""
        except ApiError as e:
            return f"{name}: {str(e)[:200]}"

    def throughput(self, key: str, n: int, quota: int, timeout: float, image: str | None) -> None:
        """`image` None: the trainer image, whose command wrapper (a Python process) runs the command."""
        queue = self.queue(key.replace("_", "-"), f"{quota * 10}m", f"{quota * 64}Mi")
        marks = self.claim(f"marks-{queue}")
        names = [f"{queue}-{i:04d}" for i in range(n)]
        failed_creates: list[str] = []
        created_s: float | None = None
        probes: list[float] = []
        loads: list[float] = []
        done = threading.Event()

        def make(name: str) -> None:
            if error := self.create_marking_job(name, queue, image):
                failed_creates.append(error)

        def summary(elapsed: float, final: bool) -> Obj:
            ended = {j: self.seen.first(j, "Succeeded") or self.seen.first(j, "Failed") for j in names}
            ok = [j for j in names if self.seen.first(j, "Succeeded")]
            pods: dict[str, list[Pod]] = {}
            with self.seen.lock:
                for pod in self.seen.pods.values():
                    pods.setdefault(pod.job, []).append(pod)
            lines = {j: len((marks / j / "ran").read_text().split()) if final and (marks / j / "ran").exists() else 0
                     for j in names}
            twice = [j for j in names if len(pods.get(j, [])) > 1 or any(p.restarts for p in pods.get(j, []))
                     or lines[j] > 1]
            last = max((t for t in ended.values() if t), default=t0)
            by = {f"succeeded_by_{s}s": sum(1 for j in ok if (self.seen.first(j, "Succeeded") or 0) - t0 <= s)
                  for s in (60, 120, 300)}
            return {"jobs": n, "quota": quota, "image": image or "the trainer image", "complete": False,
                    "wall_s": round(elapsed, 1),
                    "all_done_s": round(last - t0, 1) if len(ok) == n else None, "created_s": created_s,
                    "succeeded": len(ok), **by, "failed": sum(1 for j in names if self.seen.first(j, "Failed")),
                    "failed_creates": failed_creates[:5], "n_failed_creates": len(failed_creates),
                    "not_succeeded": [j for j in names if j not in ok][:20], "lost": n - len(ok),
                    "run_twice": len(twice), "run_twice_jobs": twice[:20],
                    "unmarked_succeeded": sum(1 for j in ok if lines[j] == 0) if final else None,
                    "api_get_s": dist(probes, 4), "load_1m": dist(loads, 2),
                    "operator_peak_rss_mib": round(self.op.peak_rss() / 2**20)}

        threading.Thread(target=self.probe_api, args=(done, probes, loads), daemon=True).start()
        t0 = time.monotonic()
        try:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(make, names))
            created_s = round(time.monotonic() - t0, 1)
            while time.monotonic() - t0 < timeout:
                finished = sum(1 for j in names if self.seen.first(j, "Succeeded") or self.seen.first(j, "Failed"))
                print(f"{key}: {finished}/{n} ended at {time.monotonic() - t0:.0f} s, load {load()}", flush=True)
                RESULT[key] = summary(time.monotonic() - t0, False)
                save()
                if finished + len(failed_creates) >= n:
                    break
                time.sleep(10)
        finally:
            done.set()
            time.sleep(2)  # the last watch events
            self.record_final(key, summary(time.monotonic() - t0, True), n, len(failed_creates))

    def record_final(self, key: str, result: Obj, n: int, failed_creates: int) -> None:
        """Save a throughput run's last summary, with the jobs' restart counts and whether all `n` ended."""
        status = self.api.get(JOBS)["items"]
        result["job_restart_counts"] = sum(int((j.get("status") or {}).get("restartCount") or 0) for j in status)
        result["complete"] = result["succeeded"] + result["failed"] + failed_creates >= n
        RESULT[key] = result
        save()


@contextmanager
def session(logs: Path | None) -> Iterator[Bench]:
    """A fresh embedded cluster with Kueue, the operator and the watches; all stopped at the end (its
    logs copied to `logs` first, when given)."""
    cluster = start_cluster(kueue=True, extra=("--no-metrics-server", "--no-object-store"))
    op: OperatorProcess | None = None
    informers: list[Informer] = []
    try:
        op = start_installed(cluster.kubeconfig, cluster.root, {"KUBEFORGE_LOG_FORMAT": "plain"})
        api = KubeClient.from_kubeconfig(cluster.kubeconfig)
        seen = Seen()
        for path, handler in ((f"{KUEUE}/namespaces/{NS}/workloads", seen.workload), (JOBS, seen.job),
                              (f"/api/v1/namespaces/{NS}/pods", seen.pod)):
            informers.append(Informer(api, path, handler).start())
        for informer in informers:
            informer.synced.wait(60)
        yield Bench(api, seen, op)
    finally:
        for informer in informers:
            informer.stop()
        if op is not None:
            op.stop()
        cluster.stop()
        if logs:  # for a look afterwards; never needed for the results
            shutil.copytree(cluster.root / "logs", logs, dirs_exist_ok=True)
            shutil.copy(cluster.root / "operator.log", logs / "operator.log")
        shutil.rmtree(cluster.root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-jobs", type=int, default=20)
    parser.add_argument("--preemptions", type=int, default=5)
    parser.add_argument("--throughput-jobs", type=int, default=1000)
    parser.add_argument("--image", default="busybox:1.36", help="the throughput jobs' image (runs the command bare)")
    parser.add_argument("--wrapper-jobs", type=int, default=1000,
                        help="then as many on the trainer image, on a cluster of their own")
    parser.add_argument("--quota", type=int, default=20, help="jobs the throughput ClusterQueue admits at once")
    parser.add_argument("--throughput-timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="keep the parts of the results file this run skips")
    parser.add_argument("--logs", type=Path, help="copy the operator's and the cluster's logs here at the end")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped early: the cluster still goes
    if args.keep and RESULTS.exists():
        RESULT.update({k: v for k, v in json.loads(RESULTS.read_text()).items() if k not in RESULT})
    RESULT.setdefault("load_1m_at_start", load())
    print(f"load average (1 min) at the start: {load()}", flush=True)
    try:
        if args.latency_jobs or args.preemptions or args.throughput_jobs:
            with session(args.logs and args.logs / "first") as bench:
                if args.latency_jobs:
                    bench.latency(args.latency_jobs)
                if args.preemptions:
                    bench.preemption(args.preemptions)
                if args.throughput_jobs:
                    bench.throughput("throughput", args.throughput_jobs, args.quota, args.throughput_timeout,
                                     args.image)
        if args.wrapper_jobs:  # a fresh cluster: one node holds ~1,000 pods, finished ones included
            with session(args.logs and args.logs / "wrapper") as bench:
                bench.throughput("throughput_wrapper", args.wrapper_jobs, args.quota, args.throughput_timeout, None)
        print(f"wrote {RESULTS.relative_to(REPO)}")
    finally:
        RESULT["load_1m_at_end"] = load()
        print(f"load average (1 min) at the end: {RESULT['load_1m_at_end']}", flush=True)
        save()

if __name__ == "__main__":
    main()
