"""Operator benchmark on the embedded control plane, side by side with a hand-written asyncio client.

Measures: create -> all pods exist latency of 4-node TrainingJobs (p50/p99), sustained jobs/s
(operator vs a minimal client creating the same Service + pods directly; interleaved A B A B),
API writes per job lifecycle, writes per no-op resync (operator restart over settled jobs), and
operator RSS with 1,000 jobs. Pods are made unschedulable (nodeSelector) so that the node agent's
process spawning does not take the 2 cores away from what is measured, except in the lifecycle
phase, whose jobs run to Succeeded. Writes bench/results/operator.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "embedded-cluster"), str(REPO / "operator")]

import kopf  # noqa: E402
from kubeforge_api.trainingjob import TrainingJobSpec  # noqa: E402
from kubeforge_operator.kube import Kube  # noqa: E402
from kubeforge_operator.plan import ObjectRef  # noqa: E402
from kubeforge_operator.render.trainingjob import members, render_pod, render_service  # noqa: E402
from minicluster.kubeapi import KubeClient  # noqa: E402
from minicluster.launch import RunningCluster, start_cluster  # noqa: E402
from minicluster.operator_process import OperatorProcess, install, operator_kubeconfig  # noqa: E402

Obj = dict[str, Any]
TJ = "/apis/kubeforge.dev/v1alpha1/namespaces/{ns}/trainingjobs"
MACHINE = "2-core CPU, embedded control plane (k8s 1.34.4) on the same machine"
NOWHERE = {"podTemplate": {"nodeSelector": {"kubernetes.io/arch": "nowhere"}}}  # an allowed key, no such node


def tj(name: str, nodes: int, spec: Obj | None = None) -> Obj:
    return {"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"nodes": nodes, "command": ["python", "-c", "print('ok')"], **(spec or {})}}


class PodWatch:
    """Time at which each pod name was first seen in a namespace."""

    def __init__(self, client: KubeClient, ns: str) -> None:
        self.client, self.path = client, f"/api/v1/namespaces/{ns}/pods"
        self.first_seen: dict[str, float] = {}
        self.stop = threading.Event()
        rv = client.get(self.path)["metadata"]["resourceVersion"]
        threading.Thread(target=self._run, args=(rv,), daemon=True).start()

    def _run(self, rv: str) -> None:
        while not self.stop.is_set():
            for etype, obj in self.client.watch(self.path, rv, timeout=60):
                rv = obj["metadata"]["resourceVersion"]
                if etype == "ADDED":
                    self.first_seen.setdefault(obj["metadata"]["name"], time.perf_counter())

    def all_seen(self, names: list[str], timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(n in self.first_seen for n in names):
                return max(self.first_seen[n] for n in names)
            time.sleep(0.01)
        raise TimeoutError(f"pods not all created: {[n for n in names if n not in self.first_seen][:5]}")


def pod_names(job: str, nodes: int) -> list[str]:
    return [f"{job}-node-{i}" for i in range(nodes)]


def new_namespace(client: KubeClient, name: str) -> str:
    client.create("/api/v1/namespaces", {"metadata": {"name": name}})
    for _ in range(200):
        try:
            client.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            return name
        except Exception:
            time.sleep(0.1)
    return name


async def create_all(bodies: list[Obj], post: Any, concurrency: int) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    starts: list[float] = [0.0] * len(bodies)

    async def one(i: int, body: Obj) -> None:
        async with sem:
            starts[i] = time.perf_counter()
            await post(body)

    await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return starts


def operator_round(kube: Kube, client: KubeClient, ns: str, prefix: str, n: int, nodes: int,
                   concurrency: int) -> tuple[float, list[float]]:
    watch = PodWatch(client, ns)
    bodies = [tj(f"{prefix}-{i}", nodes, NOWHERE) for i in range(n)]

    async def post(body: Obj) -> None:
        await kube.request("POST", TJ.format(ns=ns), body)

    starts = asyncio.run(_with_session(kube, create_all(bodies, post, concurrency)))
    done = [watch.all_seen(pod_names(b["metadata"]["name"], nodes)) for b in bodies]
    watch.stop.set()
    return n / (max(done) - min(starts)), [d - s for d, s in zip(done, starts, strict=True)]


def baseline_round(kube: Kube, client: KubeClient, ns: str, prefix: str, n: int, nodes: int,
                   concurrency: int) -> tuple[float, list[float]]:
    """The same children, created directly by a minimal asyncio client (no CR, no operator)."""
    watch = PodWatch(client, ns)
    spec = TrainingJobSpec.model_validate(tj("x", nodes, NOWHERE)["spec"])

    async def post(body: Obj) -> None:
        ref = ObjectRef(body["metadata"]["name"], ns, "00000000-0000-0000-0000-000000000000", 1)
        objs = [render_service(ref)] + [render_pod(ref, spec, m, 0, "kubeforge/trainer:0.1.0", "1Gi")
                                        for m in members(spec)]
        for o in objs:
            o["metadata"].pop("ownerReferences")
        await asyncio.gather(*(kube.request("POST", f"/api/v1/namespaces/{ns}/{o['kind'].lower()}s", o)
                               for o in objs))

    bodies = [tj(f"{prefix}-{i}", nodes) for i in range(n)]
    starts = asyncio.run(_with_session(kube, create_all(bodies, post, concurrency)))
    done = [watch.all_seen(pod_names(b["metadata"]["name"], nodes)) for b in bodies]
    watch.stop.set()
    return n / (max(done) - min(starts)), [d - s for d, s in zip(done, starts, strict=True)]


async def _with_session(kube: Kube, coro: Any) -> Any:
    try:
        return await coro
    finally:
        await kube.close()
        kube._session = None


def writes(op: OperatorProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for m in re.finditer(r'kubeforge_api_writes_total\{kind="([^"]+)",verb="([^"]+)"\} (\S+)', text):
        out[f"{m.group(2)} {m.group(1)}"] = float(m.group(3))
    return out


def settle(op: OperatorProcess, quiet_for: float = 5.0, timeout: float = 300.0) -> None:
    """Wait until the operator has made no write for `quiet_for` seconds (its queue has drained)."""
    deadline, last, since = time.monotonic() + timeout, writes(op), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = writes(op)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_for:
            return


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes `pids` have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_states(client: KubeClient, ns: str, n: int, state: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = client.get(TJ.format(ns=ns))["items"]
        if sum(1 for i in items if i.get("status", {}).get("state") == state) >= n:
            return
        time.sleep(0.5)
    raise TimeoutError(f"not all jobs reached {state}")


def save(out: str, result: dict[str, Any]) -> None:
    """Keep the results so far, with the time they were written (the report shows it)."""
    result["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))


PHASES = ("lifecycle", "throughput", "latency", "rss")


def lifecycle_writes(admin: KubeClient, op: OperatorProcess, jobs: int) -> dict[str, Any]:
    """API writes per lifecycle of 2-node jobs that run to Succeeded."""
    ns_w = new_namespace(admin, "bench-lifecycle")
    settle(op)
    before = writes(op)
    for i in range(jobs):
        admin.create(TJ.format(ns=ns_w), tj(f"life-{i}", 2))
    wait_states(admin, ns_w, jobs, "Succeeded")
    settle(op)
    life = delta(writes(op), before)
    return {"writes_per_lifecycle": {k: v / jobs for k, v in sorted(life.items())},
            "writes_per_lifecycle_goal": "pods + services + 3 = 6 for a 2-node job (events counted apart)"}


def single_latency(kube: Kube, admin: KubeClient, op: OperatorProcess, jobs: int = 50) -> dict[str, Any]:
    """Create -> pods latency with no queue: one job at a time."""
    ns_l = new_namespace(admin, "bench-latency")
    single: list[float] = []
    for i in range(jobs):
        settle(op, quiet_for=0.5)
        single += operator_round(kube, admin, ns_l, f"s{i}", 1, 4, 1)[1]
    return {"p50": statistics.median(single) * 1e3, "p99": sorted(single)[int(0.99 * (len(single) - 1))] * 1e3,
            "n": len(single)}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=40, help="jobs per round and side")
    ap.add_argument("--rss-jobs", type=int, default=1000)
    ap.add_argument("--lifecycle-jobs", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "operator.json"))
    ap.add_argument("--only", nargs="*", choices=PHASES, help="run only these phases")
    return ap.parse_args()


def cpu_ms_per_job(procs: dict[str, list[int]], before: dict[str, float], jobs: int) -> dict[str, float]:
    """ms of CPU per job that each group of processes used since `before` (its CPU seconds then)."""
    return {who: (cpu_s(pids) - before[who]) / jobs * 1e3 for who, pids in procs.items()}


def paired_round(kube: Kube, admin: KubeClient, op: OperatorProcess, procs: dict[str, list[int]], r: int,
                 args: argparse.Namespace, cpu: dict[str, list[float]]) -> tuple[float, float, list[float]]:
    """One round, the operator path then the baseline path: both rates and the operator path's
    create -> pods latencies; each side's CPU per job is appended to `cpu`."""
    ns_a = new_namespace(admin, f"bench-op-{r}")
    ns_b = new_namespace(admin, f"bench-base-{r}")
    settle(op)
    before = {who: cpu_s(pids) for who, pids in procs.items()}
    rate_a, lat = operator_round(kube, admin, ns_a, "j", args.jobs, 4, args.concurrency)
    settle(op)  # the operator's later passes (pods seen, Unschedulable) count for its side
    for who, ms in cpu_ms_per_job(procs, before, args.jobs).items():
        cpu[f"{who} operator"].append(ms)
    before = {who: cpu_s(pids) for who, pids in procs.items()}
    rate_b, _ = baseline_round(kube, admin, ns_b, "j", args.jobs, 4, args.concurrency)
    settle(op)
    for who, ms in cpu_ms_per_job(procs, before, args.jobs).items():
        cpu[f"{who} baseline"].append(ms)
    print(f"round {r}: operator {rate_a:.1f} jobs/s, baseline {rate_b:.1f} jobs/s", flush=True)
    return rate_a, rate_b, lat


def throughput(kube: Kube, admin: KubeClient, op: OperatorProcess, procs: dict[str, list[int]],
               args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds (A B A B): jobs/s of each path and their ratio per round, CPU per job of
    the operator and the control plane on each path, create -> pods latency under load."""
    ratios: list[float] = []
    op_lat: list[float] = []
    op_rates: list[float] = []
    base_rates: list[float] = []
    cpu: dict[str, list[float]] = {f"{who} {side}": [] for who in procs for side in ("operator", "baseline")}
    for r in range(args.rounds):
        rate_a, rate_b, lat = paired_round(kube, admin, op, procs, r, args, cpu)
        ratios.append(rate_a / rate_b)
        op_lat += lat
        op_rates.append(rate_a)
        base_rates.append(rate_b)
    return {"jobs_per_s": {"operator_median": statistics.median(op_rates),
                           "baseline_median": statistics.median(base_rates),
                           "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                           "ratio_max": max(ratios), "rounds": args.rounds, "ratios": ratios},
            "cpu_ms_per_job": {k: statistics.median(v) for k, v in cpu.items()},  # process, side
            "create_to_pods_ms_under_load": {"p50": statistics.median(op_lat) * 1e3,
                                             "p99": sorted(op_lat)[int(0.99 * (len(op_lat) - 1))] * 1e3,
                                             "n": args.rounds * args.jobs}}


def rss_at_jobs(admin: KubeClient, op: OperatorProcess, jobs: int) -> dict[str, Any]:
    """Operator RSS once `jobs` unschedulable jobs have settled."""
    ns_r = new_namespace(admin, "bench-rss")
    for i in range(jobs):
        admin.create(TJ.format(ns=ns_r), tj(f"r{i}", 1, NOWHERE))
    wait_states(admin, ns_r, jobs, "Pending", timeout=900)  # unschedulable pods: state Pending
    settle(op)
    assert op.proc is not None
    return {"jobs": jobs, "rss_mb": rss_mb(op.proc.pid)}


def noop_resync(op: OperatorProcess) -> dict[str, float]:
    """API writes of a restarted operator over settled jobs (a fresh process counts from 0)."""
    op.stop()
    op.start()
    settle(op, quiet_for=10)
    return {k: v for k, v in writes(op).items() if v}


def run_phases(args: argparse.Namespace, cluster: RunningCluster, admin: KubeClient,
               op: OperatorProcess) -> dict[str, Any]:
    """The wanted phases in order, each saved as soon as it is measured; with --only, the other
    phases' last results are kept."""
    want = set(args.only or PHASES)
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    admin_login = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    kube_admin = Kube(lambda: admin_login)
    kept = json.loads(Path(args.out).read_text()) if args.only and Path(args.out).exists() else {}
    result: dict[str, Any] = {**kept, "machine": MACHINE}
    if "lifecycle" in want:  # writes per lifecycle first, on a quiet operator: jobs that run to Succeeded
        result |= lifecycle_writes(admin, op, args.lifecycle_jobs)
        save(args.out, result)
    if "throughput" in want and args.rounds:
        assert op.proc is not None
        procs = {"operator": [op.proc.pid], "control_plane": list(cluster.info["pids"].values())}
        result |= throughput(kube_admin, admin, op, procs, args)
        save(args.out, result)
    if "latency" in want:
        result["create_to_pods_ms_single"] = single_latency(kube_admin, admin, op)
        save(args.out, result)
    if "rss" in want:  # 1,000 jobs: RSS, then a no-op resync (operator restart over the settled jobs)
        result["rss_mb_at_jobs"] = rss_at_jobs(admin, op, args.rss_jobs)
        save(args.out, result)
        result["writes_on_noop_resync"] = noop_resync(op)
        save(args.out, result)
    return result


def main() -> int:
    args = parse_args()
    cluster = start_cluster()
    op: OperatorProcess | None = None
    try:
        admin = KubeClient.from_kubeconfig(cluster.kubeconfig)
        install(cluster.kubeconfig)
        opcfg = operator_kubeconfig(cluster.kubeconfig, cluster.root / "operator.kubeconfig")
        op = OperatorProcess(opcfg, cluster.root / "operator.log", {"KUBEFORGE_LOG_FORMAT": "plain"}).start()
        print(json.dumps(run_phases(args, cluster, admin, op), indent=2))
        return 0
    finally:
        if op is not None:
            op.stop()
        cluster.stop()

if __name__ == "__main__":
    sys.exit(main())
