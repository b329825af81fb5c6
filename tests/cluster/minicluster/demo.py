"""`make demo`: the embedded cluster, the operator under its own ServiceAccount, and every sample
TrainingJob applied and followed to a terminal state, printing what `kubectl get tj` shows."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from .launch import start_cluster
from .operator_process import OperatorProcess, install, kubectl, operator_kubeconfig

TERMINAL = ("Succeeded", "Failed")


def demo(samples: Path, keep: bool, timeout: float = 900) -> int:
    print("starting the embedded cluster (the first run builds the control plane)...", flush=True)
    cluster = start_cluster()
    op: OperatorProcess | None = None
    try:
        admin = cluster.kubeconfig
        print(f"cluster ready in {cluster.info['seconds']} s; KUBECONFIG={admin}", flush=True)
        install(admin)
        op = OperatorProcess(operator_kubeconfig(admin, cluster.root / "operator.kubeconfig"),
                             cluster.root / "operator.log", {"KUBEFORGE_RESTART_BACKOFF_SECONDS": "2"}).start()
        files = sorted(samples.glob("trainingjob-*.yaml"))
        for f in files:
            kubectl(admin, "apply", "-f", str(f))
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            table = kubectl(admin, "get", "tj")
            if table != last:
                print(f"\n$ kubectl get tj   (t={time.strftime('%H:%M:%S')})\n{table}", end="", flush=True)
                last = table
            jobs = json.loads(kubectl(admin, "get", "tj", "-o", "json"))["items"]
            if jobs and all(j.get("status", {}).get("state") in TERMINAL for j in jobs):
                break
            time.sleep(1)
        jobs = json.loads(kubectl(admin, "get", "tj", "-o", "json"))["items"]
        for j in jobs:
            st = j.get("status", {})
            art = st.get("artifact")
            extra = f"; artifact {art['uri']} {art['digest'][:19]}..." if art else ""
            acc = (st.get("progress") or {}).get("eval", {}).get("accuracy")
            print(f"{j['metadata']['name']}: {st.get('state')} ({st.get('reason', '')})"
                  f"{f'; accuracy {acc:.3f}' if acc else ''}{extra}")
        ok = bool(jobs) and all(j.get("status", {}).get("state") == "Succeeded" for j in jobs)
        if keep:
            print(f"\nkept running: export KUBECONFIG={admin}; stop with: kill {cluster.proc.pid}")
        return 0 if ok else 1
    except subprocess.CalledProcessError as e:
        print(e.stderr)
        return 1
    finally:
        if not keep:
            if op is not None:
                op.stop()
            cluster.stop()
