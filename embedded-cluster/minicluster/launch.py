"""Start `python -m minicluster up` as a child process and wait for it (tests and benchmarks)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .nodes import send


@dataclass
class RunningCluster:
    root: Path
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]

    @property
    def kubeconfig(self) -> Path:
        return Path(self.info["kubeconfig"])

    @property
    def nodes(self) -> list[str]:
        return [n["name"] for n in self.info.get("nodes") or []]

    def node(self, action: str, name: str) -> str:
        """`python -m minicluster node ACTION NAME`: kill, partition, heal or the status of a node;
        returns the cluster's message, raises RuntimeError when it refuses."""
        answer = send(self.root, name, action)
        if not answer["ok"]:
            raise RuntimeError(answer["message"])
        return str(answer["message"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def start_cluster(gpus: int = 0, timeout: float = 3600, extra: tuple[str, ...] = (), nodes: int = 1,
                  kueue: bool = False) -> RunningCluster:
    """`timeout` covers a cold build of the control plane. The cluster claims a free bridge and pod
    range itself; `nodes` node agents run in it (`RunningCluster.node` kills, partitions and heals
    one); `kueue` runs Kueue's manager in it too (`--kueue`); `extra` passes more `minicluster up`
    flags (e.g. `--no-kube-proxy`, `--node-label ...`)."""
    root = Path(tempfile.mkdtemp(prefix="kubeforge-cluster-"))
    with (root / "minicluster.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "minicluster", "up", "--dir", str(root), "--gpus", str(gpus),
             *(["--nodes", str(nodes)] if nodes != 1 else []), *(["--kueue"] if kueue else []), *extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ready = root / "ready.json"
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError("embedded cluster failed to start:\n" + (root / "minicluster.log").read_text()[-4000:])
        time.sleep(0.5)
    return RunningCluster(root, proc, json.loads(ready.read_text()))
