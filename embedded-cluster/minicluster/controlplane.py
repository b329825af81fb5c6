"""Start and stop a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) as child processes of the `minicp` multi-call binary, with TLS, static-token
authentication, `Node,RBAC` authorization, service-account signing and the aggregation layer
(front-proxy certificates, for metrics-server). The API server listens on the pod bridge's
gateway address and advertises it, so pods reach it through the `kubernetes` Service."""

from __future__ import annotations

import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubeforge_operator.ports import free_port

from .nodes import NODE_NAME


@dataclass(frozen=True)
class Identity:
    """A static-token identity; `groups` decide what RBAC grants it."""

    user: str
    groups: tuple[str, ...] = ()
    token: str = field(default_factory=lambda: secrets.token_hex(16))


def write_kubeconfig(path: Path, server: str, ca: Path, token: str, user: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "minicp", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "minicp", "context": {"cluster": "minicp", "user": user}}],
        "current-context": "minicp",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ControlPlane:
    """The four control-plane processes under one state directory."""

    def __init__(self, binary: Path, root: Path, address: str = "127.0.0.1", nodes: Sequence[str] = (NODE_NAME,),
                 controller_manager_flags: Sequence[str] = ()) -> None:
        """`address`: where the API server listens and what it advertises (the pod bridge's gateway);
        `nodes`: the node agents it gets an identity for (`node_kubeconfig`); the controller-manager
        runs with `controller_manager_flags` too (the node-monitor timings of a cluster of several nodes)."""
        self.binary = binary
        self.root = root
        self.pki = root / "pki"
        self.logs = root / "logs"
        self.address = address
        self.api_port = free_port()
        self.server = f"https://{address}:{self.api_port}"
        self.identities = {
            "admin": Identity("kubernetes-admin", ("system:masters",)),
            "kcm": Identity("system:kube-controller-manager"),
            "scheduler": Identity("system:kube-scheduler"),
            **{self.node_identity(n): Identity(f"system:node:{n}", ("system:nodes",)) for n in nodes},
            "kube-proxy": Identity("system:kube-proxy"),  # bootstrap RBAC binds system:node-proxier to it
            "metrics-server": Identity("kubeforge:metrics-server"),
        }
        self.kcm_flags = list(controller_manager_flags)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @staticmethod
    def node_identity(node: str) -> str:
        """The identity (and kubeconfig) name of a node agent: `node` for the one node of a one-node cluster."""
        return "node" if node == NODE_NAME else f"node-{node}"

    def kubeconfig(self, name: str) -> Path:
        return self.root / f"{name}.kubeconfig"

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    def start(self, timeout: float = 240.0) -> None:
        for d in (self.pki, self.logs, self.root / "etcd"):
            d.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(self.binary), "pki", str(self.pki), self.address], check=True)
        lines = [
            f'{i.token},{i.user},{i.user},"{",".join(i.groups)}"' for i in self.identities.values()
        ]
        (self.pki / "tokens.csv").write_text("\n".join(lines) + "\n")
        for name, ident in self.identities.items():
            write_kubeconfig(self.kubeconfig(name), self.server, self.ca, ident.token, ident.user)
        deadline = time.monotonic() + timeout
        etcd, peer = free_port(), free_port()
        self._spawn("etcd", [
            "--name=minicp", f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd}", f"--advertise-client-urls=http://127.0.0.1:{etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=minicp=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync=true", "--experimental-watch-progress-notify-interval=5s",
            "--log-level=warn", "--quota-backend-bytes=4294967296",
        ])
        self._wait(deadline, "etcd", lambda: b'"health":"true"' in _get(f"http://127.0.0.1:{etcd}/health"))
        sa_key = self.pki / "sa.key"
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd}",
            f"--bind-address={self.address}", f"--advertise-address={self.address}", f"--secure-port={self.api_port}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}",
            f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca}",
            f"--token-auth-file={self.pki / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_key}", f"--service-account-signing-key-file={sa_key}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true",
            "--kubelet-preferred-address-types=InternalIP", *self._aggregation_flags(),
            "--profiling=false", "--v=1",
        ])
        admin = self.identities["admin"].token
        self._wait(deadline, "kube-apiserver",
                   lambda: _get(f"{self.server}/readyz", admin, self.ca) == b"ok")
        common = ["--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"]
        kcm = self.kubeconfig("kcm")
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kcm}", f"--authentication-kubeconfig={kcm}", f"--authorization-kubeconfig={kcm}",
            f"--secure-port={free_port()}", "--controllers=*", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa_key}", f"--root-ca-file={self.ca}",
            "--cluster-name=minicp", "--kube-api-qps=200", "--kube-api-burst=400",
            "--concurrent-gc-syncs=5", "--horizontal-pod-autoscaler-sync-period=5s", *self.kcm_flags, *common,
        ])
        sched = self.kubeconfig("scheduler")
        self._spawn("kube-scheduler", [
            f"--kubeconfig={sched}", f"--authentication-kubeconfig={sched}",
            f"--authorization-kubeconfig={sched}", f"--secure-port={free_port()}",
            "--kube-api-qps=200", "--kube-api-burst=400", *common,
        ])
        # The default ServiceAccount appearing proves the controller-manager's controllers run.
        self._wait(deadline, "kube-controller-manager", lambda: b'"kind":"ServiceAccount"' in _get(
            f"{self.server}/api/v1/namespaces/default/serviceaccounts/default", admin, self.ca))

    def _aggregation_flags(self) -> list[str]:
        """What the API server needs to serve aggregated APIs (metrics.k8s.io from metrics-server)."""
        return [
            f"--requestheader-client-ca-file={self.pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client", "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={self.pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={self.pki / 'front-proxy-client.key'}",
            "--enable-aggregator-routing=true",  # dial the endpoint, not the ClusterIP: no need for kube-proxy
        ]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(self.binary), name, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _wait(self, deadline: float, name: str, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            for pname, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{pname} exited with {proc.returncode}:\n{self.tail(pname)}")
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{name} not ready in time:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def rss_bytes(self) -> int:
        """Resident memory of all control-plane processes together."""
        return rss_bytes(p.pid for p in self.procs.values())

    def stop(self) -> None:
        # kube-apiserver's pre-shutdown hook (removing its `kubernetes` endpoint) can wait up to 20 s
        # once a node agent has run; the cluster is thrown away, so it gets 3 s like everything here.
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(3 if name == "kube-apiserver" else 10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def describe(self) -> dict[str, object]:
        return {"server": self.server, "ca": str(self.ca), "kubeconfig": str(self.kubeconfig("admin")),
                "pids": {n: p.pid for n, p in self.procs.items()}}


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of the given processes together."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return total


def _get(url: str, token: str | None = None, ca: Path | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
        return bytes(resp.read())


__all__ = ["NODE_NAME", "ControlPlane", "Identity", "free_port", "rss_bytes", "write_kubeconfig"]
