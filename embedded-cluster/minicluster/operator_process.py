"""Run the Kubeforge operator as a local process under exactly the RBAC it ships: install the CRDs,
namespace and RBAC from manifests/base, mint a token for its ServiceAccount (TokenRequest) and
hand the operator a kubeconfig holding only that token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubeforge_operator.ports import free_port

from . import memcap
from .controlplane import write_kubeconfig

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kubeforge-system"
SERVICE_ACCOUNT = "kubeforge-operator"


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    out = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], input=input, text=True,
                         capture_output=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def install(admin_kubeconfig: Path) -> list[dict[str, Any]]:
    """CRDs, namespace and RBAC of manifests/base (everything but the Deployments); returns what it applied."""
    rendered = kubectl(admin_kubeconfig, "kustomize", str(REPO / "manifests" / "base"))
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] != "Deployment"]
    kubectl(admin_kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-",
            input=yaml.safe_dump_all(docs))
    kubectl(admin_kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return docs


def operator_kubeconfig(admin_kubeconfig: Path, out: Path, namespace: str = NAMESPACE) -> Path:
    """A kubeconfig holding only a token of the operator's ServiceAccount in `namespace`."""
    token = kubectl(admin_kubeconfig, "create", "token", SERVICE_ACCOUNT, "-n", namespace,
                    "--duration=24h").strip()
    cfg = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    return write_kubeconfig(out, cluster["server"], Path(cluster["certificate-authority"]), token,
                            f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}")


class OperatorProcess:
    """`python -m kubeforge_operator` in the background; can be killed and started again."""

    def __init__(self, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None,
                 memory_limit: int = memcap.LIMIT_BYTES) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.liveness_port = 0
        self.metrics_port = 0
        self.memory_limit = memory_limit
        self.cgroup: Path | None = None  # the cgroup v2 group enforcing memory.max, where the machine allows
        self.peaks: list[int] = []  # peak RSS in bytes of every run of the process that ended

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.liveness_port, self.metrics_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBEFORGE_LIVENESS_PORT": str(self.liveness_port),
               "KUBEFORGE_METRICS_PORT": str(self.metrics_port), **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "kubeforge_operator"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.cgroup = memcap.cap(self.proc.pid, f"kubeforge-operator-{self.proc.pid}", self.memory_limit)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.kill()  # never leave a half-started operator acting on the cluster
        raise TimeoutError(f"operator not live after {timeout:.0f} s:\n{self.tail()}")

    def ensure_running(self, timeout: float = 120) -> None:
        """Start the process again when it is not running (never started, killed, or crashed)."""
        if self.proc is None or self.proc.poll() is not None:
            self.kill()  # releases the dead run's cgroup
            self.start(timeout)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.peaks.append(memcap.peak_rss(self.proc.pid))
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)
        memcap.release(self.cgroup)
        self.cgroup = None

    def peak_rss(self) -> int:
        """The largest resident set any run of the operator reached so far, in bytes."""
        running = memcap.peak_rss(self.proc.pid) if self.proc is not None and self.proc.poll() is None else 0
        return max([running, *self.peaks])

    def check_memory(self) -> int:
        """The peak in bytes; AssertionError when it reached the limit."""
        peak = self.peak_rss()
        enforced = f"cgroup memory.max at {self.cgroup}" if self.cgroup else "peak RSS (VmHWM) checked"
        assert peak < self.memory_limit, (f"operator peak RSS {peak / 2**20:.0f} MiB reached its "
                                          f"{self.memory_limit / 2**20:.0f} MiB limit ({enforced})")
        return peak

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def start_installed(admin_kubeconfig: Path, root: Path, env: dict[str, str] | None = None) -> OperatorProcess:
    """Install the operator on a cluster of one's own and start it there as its ServiceAccount (its
    kubeconfig and log under `root`): what a test or benchmark with a cluster of its own needs."""
    install(admin_kubeconfig)
    kubeconfig = operator_kubeconfig(admin_kubeconfig, root / "operator.kubeconfig")
    return OperatorProcess(kubeconfig, root / "operator.log", env).start()
