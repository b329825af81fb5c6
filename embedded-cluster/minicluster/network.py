"""Pod networking: a Linux bridge on the host and one network namespace per pod, joined to the
bridge by a veth pair, so every pod has its own IP and pods can listen on the same port.
Traffic never leaves the machine: the bridge has no uplink. Hairpin is on for every pod port (a
pod reaches itself through its own Service). Clusters side by side each claim a bridge of their
own (`claim`) and remove only the bridge and namespaces they created. Nodes of one cluster share
its bridge, each allocating its pods' addresses from a range of its own (`PodRange`)."""

from __future__ import annotations

import ipaddress
import subprocess
import threading
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _ip_ok(*args: str) -> bool:
    return subprocess.run(["ip", *args], capture_output=True).returncode == 0


@dataclass(frozen=True)
class Sandbox:
    """A pod's network namespace and address."""

    netns: str
    ip: str

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


class PodNetwork:
    """Allocates pod IPs from `cidr` and creates/destroys network namespaces on `bridge`."""

    def __init__(self, bridge: str, cidr: str) -> None:
        self.bridge = bridge
        self.net = ipaddress.ip_network(cidr)
        self.gateway = str(next(self.net.hosts()))
        self._used: set[str] = {self.gateway}
        self._lock = threading.Lock()
        self._seq = 0
        self._netns: set[str] = set()
        self._owns_bridge = False

    @classmethod
    def claim(cls) -> PodNetwork:
        """The first bridge `kft<k>` (pod range 10.<100+k>.0.0/16) that nobody has, created atomically:
        two clusters starting at once never share one."""
        for k in range(1, 100):
            net = cls(f"kft{k}", f"10.{100 + k}.0.0/16")
            if _ip_ok("link", "add", net.bridge, "type", "bridge"):
                net._owns_bridge = True
                return net
        raise RuntimeError("no free bridge name for another embedded cluster")

    def up(self) -> None:
        """Create (unless `claim` did) and address the bridge."""
        if not self._owns_bridge:
            _ip("link", "add", self.bridge, "type", "bridge")
            self._owns_bridge = True
        _ip("addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def down(self) -> None:
        """Remove the namespaces and the bridge this network created, nothing else."""
        with self._lock:
            names, self._netns = set(self._netns), set()
        for name in names:
            _ip_ok("netns", "del", name)
        if self._owns_bridge:
            _ip_ok("link", "del", self.bridge)
            self._owns_bridge = False

    def range(self, cidr: str) -> PodRange:
        """The pods of one node: addresses from `cidr` (within the bridge's range) on this bridge."""
        return PodRange(self, cidr)

    def _allocate(self, pool: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None) -> tuple[str, int]:
        with self._lock:
            self._seq += 1
            for host in (pool or self.net).hosts():
                if str(host) not in self._used:
                    self._used.add(str(host))
                    return str(host), self._seq
        raise RuntimeError("pod network exhausted")

    def create(self, pool: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None) -> Sandbox:
        """A pod's namespace on the bridge, its address from `pool` (default: the bridge's range)."""
        ip, seq = self._allocate(pool)
        netns = f"{self.bridge}-{seq}"
        veth = f"{self.bridge}v{seq}"
        _ip("netns", "add", netns)
        with self._lock:
            self._netns.add(netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("link", "set", veth, "type", "bridge_slave", "hairpin", "on")
        _ip("-n", netns, "addr", "add", f"{ip}/{self.net.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        return Sandbox(netns, ip)

    def destroy(self, sandbox: Sandbox) -> None:
        _ip_ok("netns", "del", sandbox.netns)
        with self._lock:
            self._used.discard(sandbox.ip)
            self._netns.discard(sandbox.netns)


class PodRange:
    """One node's share of a `PodNetwork`: its pods get addresses from `cidr` and the bridge's prefix
    on their interface (so pods of every node reach each other directly on the bridge)."""

    def __init__(self, network: PodNetwork, cidr: str) -> None:
        self.network = network
        self.cidr = ipaddress.ip_network(cidr)
        if not self.cidr.subnet_of(network.net):  # type: ignore[arg-type]
            raise ValueError(f"pod range {cidr} is not within the bridge's {network.net}")
        self.gateway = network.gateway
        self.bridge = network.bridge

    def create(self) -> Sandbox:
        return self.network.create(self.cidr)

    def destroy(self, sandbox: Sandbox) -> None:
        self.network.destroy(sandbox)
