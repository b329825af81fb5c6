"""ClusterIP routing: the real kube-proxy (nftables mode) and what a network plugin would set up
for it on the host.

kube-proxy's nft table (`ip kube-proxy`) and the Service range (10.96.0.0/16) are per host, so
only one embedded cluster on a machine can route Services. A host-wide `flock` decides which:
the cluster holding the lock runs kube-proxy, turns on `net.ipv4.ip_forward` and
`net.bridge.bridge-nf-call-iptables` (both saved first and restored at stop, also after a crash:
the originals are kept in a state file beside the lock), routes the Service range to its bridge
and deletes kube-proxy's tables at stop. Any other cluster runs without ClusterIP routing and
says why (`ServiceProxy.reason`); tests that need it skip with that reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"  # the API server's own Service, first address of the range
LOCK_DIR = Path("/run/kubeforge")
SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")
NFT_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))


class HostLock:
    """An exclusive, non-blocking `flock` on a file under /run; the kernel drops it if we die."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._file = f
        return True

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip()
        return ""

    def mark(self, text: str) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(text)
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class HostSysctls:
    """Set sysctls and put the original values back; originals survive a crash in `state`."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def apply(self, wanted: dict[str, str]) -> None:
        saved: dict[str, str] = {}
        if self.state.exists():  # a previous holder died without restoring: its record is the truth
            with contextlib.suppress(ValueError, OSError):
                saved = dict(json.loads(self.state.read_text()))
        for key in wanted:
            if key not in saved:
                saved[key] = _read_sysctl(key)
        self.state.write_text(json.dumps(saved))
        for key, value in wanted.items():
            _write_sysctl(key, value)

    def restore(self) -> None:
        if not self.state.exists():
            return
        with contextlib.suppress(ValueError, OSError):
            for key, value in dict(json.loads(self.state.read_text())).items():
                if value:
                    _write_sysctl(key, value)
        self.state.unlink(missing_ok=True)


def _read_sysctl(key: str) -> str:
    try:
        return (Path("/proc/sys") / key).read_text().strip()
    except OSError:
        return ""


def _write_sysctl(key: str, value: str) -> None:
    (Path("/proc/sys") / key).write_text(value)


def delete_nft_tables() -> None:
    for family, table in NFT_TABLES:
        subprocess.run(["nft", "delete", "table", family, table], capture_output=True)


def nft_tables() -> list[str]:
    """`family name` of every nft table on the host (for leak checks)."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")]


class ServiceProxy:
    """kube-proxy for one cluster, when this cluster can take the host-wide lock."""

    def __init__(self, binary: Path, kubeconfig: Path, log_dir: Path, node_name: str, bridge: str,
                 gateway: str, cluster_cidr: str, lock_dir: Path = LOCK_DIR) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.node_name = node_name
        self.bridge = bridge
        self.gateway = gateway
        self.cluster_cidr = cluster_cidr
        self.lock = HostLock(lock_dir / "kube-proxy.lock")
        self.sysctls = HostSysctls(lock_dir / "kube-proxy.sysctls.json")
        self.proc: subprocess.Popen[bytes] | None = None
        self.enabled = False
        self.reason = ""
        self._route = False
        self._held = False

    def start(self, healthz_port: int, metrics_port: int, timeout: float = 30.0) -> bool:
        """Run kube-proxy if no other cluster on this host does; False (see `reason`) otherwise."""
        if shutil.which("nft") is None:
            self.reason = "the nft command (Debian package nftables) is not installed"
            return False
        if not self.lock.acquire():
            self.reason = f"another embedded cluster on this host routes Services ({self.lock.holder()})"
            return False
        self._held = True
        self.lock.mark(f"pid {os.getpid()}, bridge {self.bridge}")
        delete_nft_tables()  # left by a holder that died
        self.sysctls.apply({key: "1" for key in SYSCTLS if (Path("/proc/sys") / key).exists()})
        masquerade_all = not (Path("/proc/sys") / SYSCTLS[1]).exists()  # no br_netfilter: NAT every hop
        self._route = subprocess.run(["ip", "route", "replace", SERVICE_CIDR, "dev", self.bridge, "src",
                                      self.gateway], capture_output=True).returncode == 0
        self._spawn(healthz_port, metrics_port, masquerade_all)
        self._wait_healthy(healthz_port, timeout)
        self.enabled = True
        return True

    def _spawn(self, healthz_port: int, metrics_port: int, masquerade_all: bool) -> None:
        args = [
            f"--kubeconfig={self.kubeconfig}", "--proxy-mode=nftables", f"--hostname-override={self.node_name}",
            f"--cluster-cidr={self.cluster_cidr}", f"--bind-address={self.gateway}",
            f"--healthz-bind-address=127.0.0.1:{healthz_port}", f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            # 0 = leave the host's conntrack sysctls alone (the defaults would rewrite them)
            "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0", "--oom-score-adj=0", "--v=1",
        ]
        if masquerade_all:
            args.append("--masquerade-all")
        out = (self.log_dir / "kube-proxy.log").open("ab")
        self.proc = subprocess.Popen([str(self.binary), "kube-proxy", *args], stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def _wait_healthy(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kube-proxy exited with {self.proc.returncode}; see kube-proxy.log")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError("kube-proxy did not become healthy; see kube-proxy.log")

    def stop(self) -> None:
        """Stop kube-proxy, then undo everything `start` did to the host."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self._held:
            return
        delete_nft_tables()
        if self._route:
            subprocess.run(["ip", "route", "del", SERVICE_CIDR, "dev", self.bridge], capture_output=True)
        self.sysctls.restore()
        self.lock.release()
        self._held = self.enabled = False

    def describe(self) -> dict[str, object]:
        return {"enabled": self.enabled, "reason": self.reason, "serviceCIDR": SERVICE_CIDR,
                "summary": self.summary()}

    def summary(self) -> str:
        """The one line `make cluster-up` prints: routing on, or off with why and what works instead."""
        if self.enabled:
            return f"ClusterIP routing: on (Service IPs in {SERVICE_CIDR} answer from this machine and from pods)"
        return (f"ClusterIP routing: off ({self.reason}); instead use `kubectl port-forward svc/NAME LOCAL:PORT`, "
                f"or a pod's IP (a ServingJob's server listens on port 8080)")

