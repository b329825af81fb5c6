"""The pure parts of several nodes in the embedded cluster: node specs from `minicluster up`'s flags,
pod ranges on the shared bridge, the node-monitor timings, and the control channel through which
`python -m minicluster node kill|partition|heal NAME` reaches a running cluster."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from pathlib import Path

import pytest
from minicluster.agent import node_cpus
from minicluster.network import PodNetwork
from minicluster.nodes import (
    Heartbeat,
    heartbeat,
    node_names,
    node_specs,
    parse_label,
    parse_taint,
    pod_ranges,
    send,
    serve,
)


def test_one_node_is_the_cluster_of_today() -> None:
    (only,) = node_specs(1, "2", 1, "10.101.0.0/16")
    assert (only.name, only.cpus, only.gpus, only.pod_cidr, dict(only.labels), only.taints) == (
        "kf-node", "2", 1, "10.101.0.0/16", {}, ())
    assert heartbeat(1, None) == Heartbeat(10.0, 40, None)  # the kubelet's schedule, stock controller-manager
    assert Heartbeat().controller_manager_flags() == []


def test_several_nodes_get_names_ranges_capacity_labels_and_taints() -> None:
    specs = node_specs(3, "2", 0, "10.102.0.0/16", labels=["all=pool=cpu", "kf-node-1=topology.kubernetes.io/zone=a"],
                       taints=["kf-node-3=dedicated=gpu:NoSchedule", "kf-node-3=slow:PreferNoSchedule"],
                       cpus_per_node=["kf-node-2=500m"], gpus_per_node=["kf-node-3=2"], check_cpus=node_cpus)
    assert [s.name for s in specs] == ["kf-node-1", "kf-node-2", "kf-node-3"]
    assert [s.pod_cidr for s in specs] == ["10.102.1.0/24", "10.102.2.0/24", "10.102.3.0/24"]
    assert [(s.cpus, s.gpus) for s in specs] == [("2", 0), ("500m", 0), ("2", 2)]
    assert dict(specs[0].labels) == {"pool": "cpu", "topology.kubernetes.io/zone": "a"}
    assert dict(specs[1].labels) == {"pool": "cpu"}
    assert specs[2].taints == ({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                               {"key": "slow", "effect": "PreferNoSchedule"})
    # The same key and effect given twice: the last one wins, as with kubectl taint --overwrite.
    (again,) = node_specs(1, "1", 0, "10.1.0.0/16", taints=["all=k=a:NoSchedule", "kf-node=k=b:NoSchedule"])
    assert again.taints == ({"key": "k", "value": "b", "effect": "NoSchedule"},)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"labels": ["kf-node-9=a=b"]}, "kf-node-9"),
    ({"labels": ["kf-node-1=no value"]}, "label"),
    ({"taints": ["kf-node-1=k=v:Sometimes"]}, "EFFECT"),
    ({"taints": ["kf-node-1=k=v"]}, "EFFECT"),
    ({"cpus_per_node": ["kf-node-1=lots"]}, "CPU"),
    ({"gpus_per_node": ["kf-node-1=-1"]}, "GPU"),
])
def test_bad_node_flags_say_what_is_wrong(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        node_specs(2, "1", 0, "10.1.0.0/16", check_cpus=node_cpus, **kwargs)  # type: ignore[arg-type]


def test_node_counts_and_ranges() -> None:
    assert node_names(2) == ["kf-node-1", "kf-node-2"]
    for bad in (0, 33):
        with pytest.raises(ValueError, match="nodes"):
            node_names(bad)
    assert pod_ranges("10.1.0.0/16", 1) == ["10.1.0.0/16"]
    with pytest.raises(ValueError, match="no room"):
        pod_ranges("10.1.0.0/23", 2)  # only one /24 besides the gateway's


def test_labels_and_taints_parse_as_kubectl_writes_them() -> None:
    assert parse_label("example.com/team=ml") == ("example.com/team", "ml")
    assert parse_label("empty=") == ("empty", "")
    assert parse_taint("nvidia.com/gpu:NoExecute") == {"key": "nvidia.com/gpu", "effect": "NoExecute"}
    for bad in ("=v", "k=v=w", "-bad=x"):
        with pytest.raises(ValueError):
            parse_label(bad)


def test_several_nodes_notice_a_death_in_seconds() -> None:
    fast = heartbeat(3, None)
    assert (fast.renew_seconds, fast.lease_seconds, fast.grace_seconds) == (1.0, 5, 5.0)
    assert fast.controller_manager_flags() == [
        "--node-monitor-period=1s", "--node-monitor-grace-period=5s", "--node-eviction-rate=10"]
    assert heartbeat(1, 20).renew_seconds == 4.0  # one node may ask for fast detection too
    assert heartbeat(3, 60).renew_seconds == 10.0  # never slower than the kubelet
    with pytest.raises(ValueError, match="flap"):
        heartbeat(3, 1)


def test_node_ranges_share_the_bridge_and_never_overlap() -> None:
    net = PodNetwork("kft-test", "10.150.0.0/16")
    a, b = net.range("10.150.1.0/24"), net.range("10.150.2.0/24")
    assert a.gateway == b.gateway == "10.150.0.1" and a.bridge == "kft-test"
    ips = {net._allocate(a.cidr)[0] for _ in range(3)} | {net._allocate(b.cidr)[0] for _ in range(3)}
    assert len(ips) == 6 and all(ipaddress.ip_address(ip) in net.net for ip in ips)
    assert {ip for ip in ips if ipaddress.ip_address(ip) in a.cidr} == {"10.150.1.1", "10.150.1.2", "10.150.1.3"}
    assert net._allocate()[0] == "10.150.0.2"  # one node: the whole range, as before
    with pytest.raises(ValueError, match="not within"):
        net.range("10.151.1.0/24")


def test_a_node_command_reaches_the_running_cluster_and_comes_back(tmp_path: Path) -> None:
    (tmp_path / "ready.json").write_text("{}")
    seen: list[tuple[str, str]] = []

    def handle(node: str, action: str) -> str:
        seen.append((node, action))
        if node != "kf-node-2":
            raise LookupError(f"no node {node!r}")
        return f"{node} {action}ed"

    stop = threading.Event()

    def cluster() -> None:
        while not stop.is_set():
            serve(tmp_path, handle)
            time.sleep(0.02)

    t = threading.Thread(target=cluster, daemon=True)
    t.start()
    try:
        assert send(tmp_path, "kf-node-2", "kill", timeout=10) == {"ok": True, "message": "kf-node-2 killed"}
        assert send(tmp_path, "kf-node-9", "heal", timeout=10) == {"ok": False, "message": "no node 'kf-node-9'"}
    finally:
        stop.set()
        t.join()
    assert seen == [("kf-node-2", "kill"), ("kf-node-9", "heal")]
    assert list((tmp_path / "control").iterdir()) == []  # requests and replies are cleaned up


def test_a_node_command_without_a_cluster_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no running cluster"):
        send(tmp_path, "kf-node-1", "kill")
    (tmp_path / "ready.json").write_text(json.dumps({}))  # a cluster that died without cleaning up
    with pytest.raises(RuntimeError, match="did not answer"):
        send(tmp_path, "kf-node-1", "kill", timeout=0.3)
    with pytest.raises(ValueError, match="unknown node action"):
        send(tmp_path, "kf-node-1", "reboot")
