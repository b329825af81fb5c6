"""`kubeforge run JOB.yaml`: the same TrainingJob YAML, run on this machine. The pods are rendered
by the operator's own code and started as local processes addressed over 127.0.0.1; the exit-code
table decides gang restarts as in a cluster; a progress bar follows rank 0; checkpoints and the
artifact land in the run's storage; a run record (`run.json`) is left for the dashboard."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubeforge_api.constants import Env
from kubeforge_api.exitcodes import FailureClass, classify
from kubeforge_api.trainingjob import TrainingJobSpec
from pydantic import ValidationError

from .render.trainingjob import JobRef, members, pod_name, render_pod

Obj = dict[str, Any]
DEFAULT_RUNS = Path.home() / ".kubeforge" / "runs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_job(path: Path) -> tuple[str, TrainingJobSpec]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "TrainingJob"]
    if len(docs) != 1:
        raise SystemExit(f"{path}: expected exactly one TrainingJob, found {len(docs)}")
    try:
        return str(docs[0]["metadata"]["name"]), TrainingJobSpec.model_validate(docs[0].get("spec") or {})
    except ValidationError as e:
        raise SystemExit(f"{path}: invalid TrainingJob:\n{e}") from None


def local_env(pod: Obj, storage: Path, master_port: int, progress_port: int) -> dict[str, str]:
    """The rendered pod's env with cluster addresses replaced by loopback ones."""
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    env[Env.MASTER_ADDR] = "127.0.0.1"
    env[Env.MASTER_PORT] = str(master_port)
    if Env.RDZV_ENDPOINT in env:
        env[Env.RDZV_ENDPOINT] = f"127.0.0.1:{master_port}"
    if Env.PS_ADDRESSES in env:
        env[Env.PS_ADDRESSES] = ",".join("127.0.0.1" for _ in env[Env.PS_ADDRESSES].split(","))
    env[Env.STORAGE_DIR] = str(storage)
    env[Env.PROGRESS_PORT] = str(progress_port)
    return env


def bar(p: Obj, width: int = 30) -> str:
    pct = float(p.get("percent", 0.0))
    done = int(width * pct / 100)
    ev = " ".join(f"{k} {v:.4g}" for k, v in (p.get("eval") or {}).items())
    loss = f" loss {p['loss']:.4f}" if p.get("loss") is not None else ""
    eta = f" eta {int(p['eta_seconds'])}s" if p.get("eta_seconds") is not None else ""
    return f"[{'#' * done}{'.' * (width - done)}] {pct:5.1f}% step {p.get('step', 0)}/{p.get('total_steps', 0)}" \
           f"{loss} {ev}{eta}"


def progress(port: int) -> Obj | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/progress?since=999999999", timeout=0.5) as r:
            return dict(json.loads(r.read()))
    except (OSError, ValueError):
        return None


def final_progress(storage: Path, last: Obj | None) -> Obj | None:
    """The end of training from the history file (rank 0 exits before a last poll can see it)."""
    history = storage / "metrics.jsonl"
    if last is None or not history.exists():
        return last
    rows = [json.loads(line) for line in history.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    if not train:
        return last
    total = int(last.get("total_steps", 0)) or train[-1]["step"]
    metrics = {k: v for k, v in evals[-1].items() if k not in ("kind", "time", "step", "epoch")} if evals else {}
    return {**last, "step": train[-1]["step"], "loss": train[-1]["loss"], "eval": metrics or last.get("eval", {}),
            "percent": round(100.0 * train[-1]["step"] / total, 1), "eta_seconds": 0}


def run_attempt(name: str, spec: TrainingJobSpec, ref: JobRef, attempt: int, storage: Path, logs: Path,
                quiet: bool) -> tuple[int, str, Obj | None]:
    """Start every pod of the gang as a process; returns (exit code, pod, last progress)."""
    master = free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    rank0_port = 0
    for m in members(spec):
        pod = render_pod(ref, spec, m, attempt, "local", "1Gi")
        port = free_port() if (m.role, m.rank) == ("node", 0) else 0
        rank0_port = port or rank0_port
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # this environment's torchrun
        env = {**os.environ, "PATH": path, **local_env(pod, storage, master, port or free_port())}
        c = pod["spec"]["containers"][0]
        with (logs / f"{pod_name(name, m.role, m.rank)}.log").open("ab") as log:
            procs[pod_name(name, m.role, m.rank)] = subprocess.Popen(
                [*c["command"], *c.get("args", [])], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
    last: Obj | None = None
    failed: tuple[int, str] | None = None
    tty, shown = sys.stdout.isatty(), -1
    while True:
        p = progress(rank0_port) if rank0_port else None
        if p is not None and p.get("total_steps"):
            last = p
            tenth = int(float(p.get("percent", 0)) // 10)
            if not quiet and (tty or tenth > shown):  # a live bar on a terminal, a line per 10% in logs
                print("\r" + bar(p) if tty else bar(p), end="" if tty else "\n", flush=True)
                shown = tenth
        codes = {n: pr.poll() for n, pr in procs.items()}
        bad = [(c, n) for n, c in codes.items() if c not in (None, 0)]
        if bad and failed is None:
            failed = (int(bad[0][0]), bad[0][1])
            for pr in procs.values():
                if pr.poll() is None:
                    os.killpg(pr.pid, signal.SIGTERM)
        workers_done = all(codes[pod_name(name, "node", i)] == 0 for i in range(spec.nodes))
        if workers_done and failed is None:
            for pr in procs.values():  # parameter servers stop with the workers
                if pr.poll() is None:
                    os.killpg(pr.pid, signal.SIGTERM)
                    pr.wait()
            if not quiet and tty:
                print()
            return 0, "", last
        if all(pr.poll() is not None for pr in procs.values()):
            if not quiet and tty:
                print()
            code, pod_ = failed or (1, "")
            return (code if code >= 0 else 128 - code), pod_, last
        time.sleep(0.2)


def run(path: Path, runs: Path, storage: Path | None, quiet: bool) -> int:
    name, spec = load_job(path)
    uid = str(uuid.uuid4())
    root = runs / f"{name}-{uid[:8]}"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    storage = storage or root / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    ref = JobRef(name, "local", uid, 1)
    record: Obj = {"name": name, "uid": uid, "file": str(path.resolve()), "spec": spec.dump(), "startTime": now(),
                   "storage": str(storage), "logs": str(logs), "restartCount": 0, "state": "Running"}
    (root / "run.json").write_text(json.dumps(record, indent=2))
    attempt = counted = 0
    print(f"kubeforge: running {name} ({len(members(spec))} local processes); record: {root / 'run.json'}")
    while True:
        code, pod, last = run_attempt(name, spec, ref, attempt, storage, logs, quiet)
        if last:
            record["progress"] = {k: v for k, v in last.items() if k != "history"}
        if code == 0:
            record["state"] = "Succeeded"
            final = final_progress(storage, last)
            if final:
                record["progress"] = final
                if not quiet:
                    print(bar(final), flush=True)
            card = storage / "artifact" / "model-card.json"
            if card.exists():
                digest = json.loads(card.read_text())["weights"]["digest"]
                record["artifact"] = {"path": str(card.parent), "digest": digest}
            break
        cls = classify(code)
        record["lastFailure"] = {"pod": pod, "exitCode": code, "class": cls.value, "time": now()}
        if cls == FailureClass.PERMANENT or counted >= spec.run_policy.backoff_limit:
            record["state"] = "Failed"
            print(f"kubeforge: {pod} exited with {code} ({cls.value}); see {logs / (pod + '.log')}", file=sys.stderr)
            break
        attempt += 1
        counted += 1
        record["restartCount"] = attempt
        print(f"kubeforge: {pod} exited with {code}; restarting the gang (attempt {attempt})", file=sys.stderr)
    record["completionTime"] = now()
    (root / "run.json").write_text(json.dumps(record, indent=2))
    print(f"kubeforge: {name} {record['state']}" + (f"; artifact {record['artifact']['path']}"
                                                      if "artifact" in record else ""))
    return 0 if record["state"] == "Succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="kubeforge")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a TrainingJob YAML on this machine")
    r.add_argument("file", type=Path)
    r.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("KUBEFORGE_RUNS_DIR", DEFAULT_RUNS)))
    r.add_argument("--storage", type=Path, help="storage directory (default: inside the run's folder)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    return run(args.file, args.runs_dir, args.storage, args.quiet)

