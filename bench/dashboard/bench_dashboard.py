"""Dashboard benchmark on the embedded control plane: the overview over 500 TrainingJobs (each with
a realistic status: conditions, progress and a 200-point history per curve) rendered server-side
by Streamlit's AppTest through the Kubernetes source, side by side with a per-job baseline (list
the names, then one GET per job: what a dashboard without list-based reads does), interleaved
A B A B. Our source keeps a watch-fed mirror of each kind, so a refresh lists nothing; the time of
plain lists (what the first render and every re-list pay) is measured alongside. Also counts the
API calls of one overview refresh and of a job page for a short and a long history. Writes
bench/results/dashboard.json (docs/benchmarks.md via bench/report.py)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "embedded-cluster")]

import yaml  # noqa: E402
from kubeforge_api.curves import MAX_CURVE_POINTS, encode  # noqa: E402
from kubeforge_api.trainingjob import TrainingJob  # noqa: E402
from kubeforge_dashboard.cache import CachingSource  # noqa: E402
from kubeforge_dashboard.kube import KubernetesSource, connect  # noqa: E402
from kubeforge_dashboard.source import Listing  # noqa: E402
from minicluster.kubeapi import KubeClient  # noqa: E402
from minicluster.launch import start_cluster  # noqa: E402
from minicluster.operator_process import install  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(REPO / "dashboard" / "streamlit_app.py")
NS = "bench"
API = f"/apis/kubeforge.dev/v1alpha1/namespaces/{NS}/trainingjobs"


class PerJobSource(KubernetesSource):
    """Baseline: the names from one list, then each job read on its own."""

    def training_jobs(self, namespaces: tuple[str, ...]) -> Listing[TrainingJob]:
        names = [(j.metadata.namespace or "", j.metadata.name) for j in super().training_jobs(namespaces).items]
        return Listing(items=[self.training_job(ns, name) for ns, name in names])


def status(i: int, points: int) -> dict[str, Any]:
    hist = {k: encode((s * 10, 1.0 / (s + 1)) for s in range(points)) for k in ("loss", "evalLoss", "accuracy",
                                                                                "samplesPerSecond")}
    t = "2026-11-28T10:00:00Z"
    return {"state": "Running", "reason": "AllPodsRunning", "restartCount": i % 3, "startTime": t,
            "conditions": [{"type": "Created", "status": "True", "reason": "PodsCreated", "message": "created",
                            "lastTransitionTime": t},
                           {"type": "Running", "status": "True", "reason": "AllPodsRunning",
                            "message": "all 2 pods are running", "lastTransitionTime": t}],
            "progress": {"step": points * 10, "totalSteps": 4000, "percent": f"{points / 4:.1f}%", "loss": 0.3,
                         "samplesPerSecond": 900.0, "etaSeconds": 120, "eval": {"accuracy": 0.9}},
            "history": hist, "lastCheckpoint": {"step": points * 10}}


def populate(client: KubeClient, kubeconfig: Path, jobs: int) -> None:
    docs = [{"apiVersion": "kubeforge.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": f"job-{i:04d}"},
             "spec": {"nodes": 2, "recipe": {"model": "mlp", "dataset": "digits"}}} for i in range(jobs)]
    subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "create", "namespace", NS], check=True,
                   capture_output=True)
    subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "apply", "--server-side", "-n", NS, "-f", "-"],
                   input=yaml.safe_dump_all(docs), text=True, check=True, capture_output=True)
    for i in range(jobs):
        points = 10 if i == 0 else MAX_CURVE_POINTS  # job-0000 has a short history, the rest a full one
        client.patch(f"{API}/job-{i:04d}/status", {"status": status(i, points)})


def app(source: KubernetesSource, ttl: float = 0, page: str | None = None, **query: str) -> AppTest:
    """An app session on the overview (or on `page`), run once: the first run of an AppTest also scans
    the installed packages for Streamlit components, which a real server does once at start-up."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["kubeforge_source"] = CachingSource(source, ttl)
    at.session_state["kubeforge_namespaces"] = [NS]
    at.run()
    if page:
        at.switch_page(page)
        for k, v in query.items():
            at.query_params[k] = v
        at.run()
    assert not at.exception, at.exception
    return at


def render(at: AppTest, source: KubernetesSource) -> float:
    """Seconds of one server-side refresh of the session's page (every script line, every read);
    `source.calls` counts only that refresh."""
    source.calls.clear()
    start = time.perf_counter()
    at.run()
    took = time.perf_counter() - start
    assert not at.exception, at.exception
    return took


def reads(source: KubernetesSource) -> float:
    """Seconds of the overview's reads alone (list, decode, validate), outside Streamlit."""
    start = time.perf_counter()
    source.namespaces(), source.training_jobs((NS,)), source.serving_jobs((NS,))
    return time.perf_counter() - start


def calls_of(kubeconfig: Path, page: str | None = None, **query: str) -> dict[str, int]:
    """API calls of one refresh of a page."""
    src = KubernetesSource(connect(str(kubeconfig)))
    render(app(src, 0, page, **query), src)
    return dict(src.calls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    running = start_cluster(gpus=0)
    try:
        install(running.kubeconfig)
        populate(KubeClient.from_kubeconfig(running.kubeconfig), running.kubeconfig, args.jobs)
        api = connect(str(running.kubeconfig))
        ours, base, plain = KubernetesSource(api), PerJobSource(api, mirror=False), KubernetesSource(api, mirror=False)
        app_ours, app_base = app(ours), app(base)  # warm: imports, connections, component scan
        t_ours, t_base, t_reads, t_lists = [], [], [], []
        for _ in range(args.rounds):
            t_ours.append(render(app_ours, ours))
            t_base.append(render(app_base, base))
            t_reads.append(reads(ours))
            t_lists.append(reads(plain))
        ratios = [b / o for o, b in zip(t_ours, t_base, strict=True)]
        overview_calls = calls_of(running.kubeconfig)
        short = calls_of(running.kubeconfig, "app_pages/training_job.py", ns=NS, name="job-0000")
        long = calls_of(running.kubeconfig, "app_pages/training_job.py", ns=NS, name="job-0001")
    finally:
        running.stop()
    out = {"machine": "2-core CPU, embedded control plane (k8s 1.34.4) on the same machine", "jobs": args.jobs,
           "overview_s": {"median": statistics.median(t_ours), "min": min(t_ours), "max": max(t_ours)},
           "overview_reads_s": {"median": statistics.median(t_reads), "min": min(t_reads), "max": max(t_reads)},
           "overview_lists_s": {"median": statistics.median(t_lists), "min": min(t_lists), "max": max(t_lists)},
           "baseline_s": {"median": statistics.median(t_base), "min": min(t_base), "max": max(t_base)},
           "speedup_vs_per_job": {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
                                  "ratio_max": max(ratios), "rounds": args.rounds},
           "overview_calls": overview_calls, "job_page_calls_history_10": short, "job_page_calls_history_200": long}
    out["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "dashboard.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
