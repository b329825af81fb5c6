"""Embedded clusters side by side on one host, and what stopping one leaves behind: nothing (no
nft table, sysctl change, bridge, network namespace, cgroup or process). These tests start
clusters of their own and run before the session cluster exists (marker `own_clusters`), so the
first cluster here can take the host's kube-proxy lock."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from minicluster.kubeapi import KubeClient
from minicluster.launch import RunningCluster, start_cluster
from minicluster.serviceproxy import SYSCTLS, nft_tables

pytestmark = pytest.mark.embedded("starts and stops embedded clusters of its own")

pytestmark = pytest.mark.own_clusters


def host_state() -> dict[str, object]:
    """What a cluster holding the kube-proxy lock changes on the host (other checkouts' clusters may
    come and go meanwhile: their bridges are not part of this)."""
    return {
        "nft": sorted(t for t in nft_tables() if t.endswith(" kube-proxy")),
        "sysctls": {k: (Path("/proc/sys") / k).read_text().strip() for k in SYSCTLS
                    if (Path("/proc/sys") / k).exists()},
        "routes": subprocess.run(["ip", "route", "show", "10.96.0.0/16"], capture_output=True, text=True).stdout,
    }


def leftovers(bridge: str) -> list[str]:
    """The bridge, its pods' network namespaces and the node's cgroups, where any is left."""
    found = []
    if subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode == 0:
        found.append(f"bridge {bridge}")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    found += [f"netns {n}" for n in netns if n.startswith(f"{bridge}-")]
    found += [str(d) for d in Path("/sys/fs/cgroup").glob(f"*/kubeforge-{bridge}")]
    return found


@contextlib.contextmanager
def running(*extra: str) -> Iterator[RunningCluster]:
    c = start_cluster(extra=("--no-metrics-server", *extra))
    try:
        yield c
    finally:
        c.stop()


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            out.append(pid)
    return out


def echo_pod(client: KubeClient) -> str:
    client.create("/api/v1/namespaces/default/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo"},
                  "spec": {"containers": [{"name": "echo", "image": "python:3.11",
                                           "command": ["python", "-m", "http.server", "8080"]}]}})
    pod = wait_for(lambda: (lambda p: p if p["status"].get("phase") == "Running" else None)(
        client.get("/api/v1/namespaces/default/pods/echo")), timeout=60, what="the echo pod")
    return str(pod["status"]["podIP"])


def reachable(ip: str) -> bool:
    try:
        conn = http.client.HTTPConnection(ip, 8080, timeout=3)
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False


def test_two_clusters_side_by_side_and_stopping_leaves_nothing_behind() -> None:
    before = host_state()
    with running() as first:
        info = first.info
        if not info["kubeProxy"]["enabled"]:
            pytest.skip(f"another cluster on this host runs kube-proxy: {info['kubeProxy']['reason']}")
        a = KubeClient.from_kubeconfig(first.kubeconfig)
        ip = echo_pod(a)
        wait_for(lambda: reachable(ip), timeout=30, what="the first cluster's pod")
        assert "ip kube-proxy" in nft_tables()
        assert (Path("/proc/sys") / SYSCTLS[0]).read_text().strip() == "1"
        pids = [int(p) for p in [*info["pids"].values(), *info["addonPids"].values()]]
        assert len(pids) == 5  # etcd, apiserver, controller-manager, scheduler, kube-proxy
        if info.get("objectStorePid"):
            pids.append(int(info["objectStorePid"]))  # the object store goes with the cluster too
        with running() as second:
            bridge_b = second.info["bridge"]
            assert bridge_b != info["bridge"] and second.info["podCIDR"] != info["podCIDR"]
            assert not second.info["kubeProxy"]["enabled"]
            assert "another embedded cluster" in second.info["kubeProxy"]["reason"]
            b = KubeClient.from_kubeconfig(second.kubeconfig)
            ip_b = echo_pod(b)
            wait_for(lambda: reachable(ip_b), timeout=30, what="the second cluster's pod")
        assert leftovers(bridge_b) == []
        assert reachable(ip), "stopping the second cluster cut the first one's pods off"
        assert "ip kube-proxy" in nft_tables(), "the second cluster removed the first one's kube-proxy table"
    time.sleep(0.5)
    assert host_state() == before
    assert leftovers(info["bridge"]) == []
    assert alive(pids) == [], "control-plane processes outlived the cluster"
