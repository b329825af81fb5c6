"""Kueue (sigs.k8s.io/kueue, the real manager built by `build-kueue.sh`) as a host process against a
cluster: it applies Kueue's CRDs, writes a Configuration and runs the manager with an admin
kubeconfig until `stop`.

What differs from an in-cluster install, and why:
- No leader election, no internal certificate management, and Kueue's webhooks are served but not
  registered with the API server (no Service reaches this host process); Kueue's objects get their
  schema defaults from the CRDs instead. The webhook server still needs a certificate: a self-signed
  one from openssl, in the state directory.
- The manager reads its metrics certificate from a fixed path (/etc/kueue/metrics/certs) when
  internal certificate management is off. Rather than write into the host's /etc, the manager runs
  in a private mount namespace where an overlay of /etc adds that directory.
- Integrations: only the default `batch/job`, and only Jobs that name a queue
  (`manageJobsWithoutQueueName: false`); Kubeforge's operator owns its Workloads itself. The
  on-demand visibility API is off (it would need an aggregated APIService).
- Health, metrics and webhook servers listen on free ports of 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubeforge_operator.ports import free_port

from .kubeapi import ApiError, KubeClient

Obj = dict[str, Any]
API_VERSION = "kueue.x-k8s.io/v1beta2"  # what Kueue v0.17's CRDs store
NAMESPACE = "kueue-system"
METRICS_CERTS = "kueue/metrics/certs"  # under /etc, where the manager reads its metrics certificate
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
FIELD_MANAGER = "kubeforge-minicluster"
HERE = Path(__file__).resolve().parent.parent


def build() -> Path:
    """Build (or find the cached) Kueue manager; its CRDs lie beside it in `crds/`."""
    out = subprocess.run([str(HERE / "build-kueue.sh")], check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def crds(crd_dir: Path) -> list[Obj]:
    """Kueue's CustomResourceDefinitions, as its module ships them."""
    docs = (yaml.safe_load(p.read_text()) for p in sorted(crd_dir.glob("*.yaml")))
    return [{k: v for k, v in d.items() if k != "status"} for d in docs
            if d and d.get("kind") == "CustomResourceDefinition"]


def apply_crds(admin: KubeClient, crd_dir: Path, timeout: float = 60.0) -> None:
    """Server-side apply every CRD (the Workload CRD is too big for a client-side apply's
    annotation), then wait until each is Established."""
    names = []
    for crd in crds(crd_dir):
        name = crd["metadata"]["name"]
        admin.request("PATCH", f"{CRD_PATH}/{name}", crd, "application/apply-patch+yaml",
                      {"fieldManager": FIELD_MANAGER, "force": "true"})
        names.append(name)
    deadline = time.monotonic() + timeout
    for name in names:
        while not _established(admin, name):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout:g}s")
            time.sleep(0.2)


def _established(admin: KubeClient, name: str) -> bool:
    conditions = (admin.get(f"{CRD_PATH}/{name}").get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def ensure_namespace(admin: KubeClient, name: str = NAMESPACE) -> None:
    try:
        admin.create("/api/v1/namespaces", {"metadata": {"name": name}})
    except ApiError as e:
        if e.status != 409:
            raise


def self_signed(cert_dir: Path) -> None:
    """tls.crt and tls.key (for 127.0.0.1 and localhost) in `cert_dir`, unless there already."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    if (cert_dir / "tls.crt").exists() and (cert_dir / "tls.key").exists():
        return
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "365", "-subj", "/CN=kueue-manager",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(cert_dir / "tls.key"), "-out", str(cert_dir / "tls.crt")],
                   check=True, capture_output=True)


def configuration(health_port: int, metrics_port: int, webhook_port: int, cert_dir: Path) -> Obj:
    """Kueue's Configuration for a host process (see the module docstring)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "manageJobsWithoutQueueName": False,
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},  # /readyz and /healthz
        "metrics": {"bindAddress": f"127.0.0.1:{metrics_port}"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "clientConnection": {"qps": 50, "burst": 100},
        "integrations": {"frameworks": ["batch/job"]},
    }


def _in_private_etc(upper: Path, work: Path, argv: list[str]) -> list[str]:
    """`argv` in a private mount namespace whose /etc is an overlay of the host's and `upper`."""
    script = 'mount -t overlay kueue-etc -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc && shift 2 && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "kueue",
            str(upper), str(work), *argv]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Kueue:
    """Kueue's manager as a child process of this one, against the cluster of `kubeconfig`."""

    def __init__(self, binary: Path, kubeconfig: Path, state_dir: Path, log_dir: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.state_dir = state_dir
        self.log = log_dir / "kueue.log"
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.webhook_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def crd_dir(self) -> Path:
        return self.binary.parent / "crds"

    def start(self, timeout: float = 120.0) -> Kueue:
        """Apply the CRDs, start the manager and wait until it answers readyz."""
        admin = KubeClient.from_kubeconfig(self.kubeconfig)
        apply_crds(admin, self.crd_dir)
        ensure_namespace(admin)
        self._spawn()
        self._wait_ready(timeout)
        return self

    def _spawn(self) -> None:
        certs = self.state_dir / "certs"
        upper, work = self.state_dir / "etc", self.state_dir / "etc-work"
        self_signed(certs)
        metrics_certs = upper / METRICS_CERTS
        metrics_certs.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        for name in ("tls.crt", "tls.key"):
            shutil.copyfile(certs / name, metrics_certs / name)
        config = self.state_dir / "config.yaml"
        config.write_text(yaml.safe_dump(configuration(self.health_port, self.metrics_port, self.webhook_port,
                                                       certs)))
        argv = [str(self.binary), f"--config={config}", f"--kubeconfig={self.kubeconfig}",
                "--feature-gates=VisibilityOnDemand=false", "--zap-log-level=info"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(_in_private_etc(upper, work, argv), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not _http_ok(f"http://127.0.0.1:{self.health_port}/readyz"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"kueue exited with {self.proc.returncode}:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"kueue not ready after {timeout:g}s:\n{self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe(self) -> Obj:
        """What ready.json says of Kueue."""
        return {"pid": self.proc.pid if self.proc else None, "apiVersion": API_VERSION,
                "healthPort": self.health_port, "metricsPort": self.metrics_port, "log": str(self.log)}

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the manager drains its controllers), SIGKILL after `timeout`; then remove the
        overlay's work directory (the kernel's scratch space)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.state_dir / "etc-work", ignore_errors=True)
