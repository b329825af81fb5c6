"""Several nodes in the embedded cluster, and their failures as a user rehearses them (`make
node-kill`, `make node-partition`, `make node-heal`): three Ready nodes with Leases of their own, a
Deployment spread over them, a node death (Lease stops, the node lifecycle controller marks the node
unreachable and taints it, the pods' processes are gone) and a partition (the same, while the pods'
processes keep running and a pod deleted meanwhile keeps running until the node is healed).

One three-node cluster serves the whole module; the tests run in order and build on each other
(the spread Deployment's pods are what the failures act on). It starts before the session cluster
(marker `own_clusters`) and leaves the host's kube-proxy alone."""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from minicluster.kubeapi import KubeClient, NotFound
from minicluster.launch import RunningCluster, start_cluster

pytestmark = [pytest.mark.embedded("kills and partitions node agents of an embedded cluster of its own"),
              pytest.mark.own_clusters]

NODES = ["kf-node-1", "kf-node-2", "kf-node-3"]
NS = "default"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
UNREACHABLE = "node.kubernetes.io/unreachable"
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def nodes() -> Iterator[RunningCluster]:
    c = start_cluster(nodes=3, extra=(
        "--no-metrics-server", "--no-object-store", "--no-kube-proxy",
        "--node-label", "all=kubeforge.dev/pool=cpu", "--node-label", "kf-node-1=topology.kubernetes.io/zone=a",
        "--node-taint", "kf-node-3=example.com/slow:PreferNoSchedule"))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def api(nodes: RunningCluster) -> KubeClient:
    return KubeClient.from_kubeconfig(nodes.kubeconfig)


def node(api: KubeClient, name: str) -> Obj:
    return api.get(f"/api/v1/nodes/{name}")


def ready(n: Obj) -> str:
    return str(next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"))


def taints(n: Obj) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}


def renewed(api: KubeClient, name: str) -> str:
    return str(api.get(f"{LEASES}/{name}")["spec"]["renewTime"])


def web_pods(api: KubeClient) -> dict[str, Obj]:
    """The spread Deployment's running pods by node."""
    pods = api.get(f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dweb")["items"]
    return {p["spec"]["nodeName"]: p for p in pods if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")}


def pid_of(pod: Obj) -> int:
    return int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("kubeforge://"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is dead too
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def answers(ip: str) -> bool:
    try:
        conn = http.client.HTTPConnection(ip, 8080, timeout=2)
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except OSError:
        return False


def server_pod(name: str, labels: dict[str, str] | None = None, node_name: str | None = None) -> Obj:
    spec: Obj = {"terminationGracePeriodSeconds": 2,
                 "containers": [{"name": "web", "image": "python:3.11", "command": [
                     "python", "-m", "http.server", "8080"], "readinessProbe": {
                     "tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}
    if node_name:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node_name}
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def test_three_ready_nodes_with_leases_and_pod_ranges_of_their_own(nodes: RunningCluster, api: KubeClient) -> None:
    assert nodes.nodes == NODES
    found = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes")["items"]}
    assert sorted(found) == NODES
    wait_for(lambda: all(ready(node(api, n)) == "True" for n in NODES), timeout=60, what="three Ready nodes")
    ranges = [ipaddress.ip_network(found[n]["spec"]["podCIDR"]) for n in NODES]
    assert len(set(ranges)) == 3 and all(r.subnet_of(ipaddress.ip_network(nodes.info["podCIDR"])) for r in ranges)
    assert all(found[n]["metadata"]["labels"]["kubeforge.dev/pool"] == "cpu" for n in NODES)
    assert found["kf-node-1"]["metadata"]["labels"]["topology.kubernetes.io/zone"] == "a"
    assert ("example.com/slow", "PreferNoSchedule") in taints(found["kf-node-3"])
    first = {n: renewed(api, n) for n in NODES}
    assert {api.get(f"{LEASES}/{n}")["spec"]["holderIdentity"] for n in NODES} == set(NODES)
    wait_for(lambda: all(renewed(api, n) != first[n] for n in NODES), timeout=30, what="every Lease renewed")
    assert nodes.node("status", "kf-node-2") == "kf-node-2\tRunning"


def test_a_deployment_spreads_over_the_nodes(nodes: RunningCluster, api: KubeClient) -> None:
    template = server_pod("web", {"app": "web"})
    template["spec"]["topologySpreadConstraints"] = [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}}]
    api.create(f"/apis/apps/v1/namespaces/{NS}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template}})
    pods = wait_for(lambda: (lambda p: p if len(p) == 3 else None)(web_pods(api)), timeout=120,
                    what="a web pod running on each node")
    assert sorted(pods) == NODES
    for name, pod in pods.items():
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(node(api, name)["spec"]["podCIDR"])
        wait_for(lambda ip=pod["status"]["podIP"]: answers(ip), timeout=60, what=f"the web pod on {name}")
    # Pods of different nodes reach each other on the shared bridge.
    probe = (f"import urllib.request; print(urllib.request.urlopen('http://{pods['kf-node-2']['status']['podIP']}"
             ":8080/', timeout=5).status)")
    out = nodes_kubectl(nodes, "exec", "-n", NS, pods["kf-node-1"]["metadata"]["name"], "--", "python", "-c", probe)
    assert out.strip() == "200"


def nodes_kubectl(nodes: RunningCluster, *args: str) -> str:
    return subprocess.run(["kubectl", f"--kubeconfig={nodes.kubeconfig}", *args], capture_output=True, text=True,
                          check=True, timeout=120).stdout


def test_node_kill_is_a_node_death(nodes: RunningCluster, api: KubeClient) -> None:
    victim = web_pods(api)["kf-node-2"]
    pid, ip = pid_of(victim), victim["status"]["podIP"]
    assert alive(pid) and answers(ip)
    # What `make node-kill NODE=kf-node-2` runs.
    out = subprocess.run([sys.executable, "-m", "minicluster", "node", "kill", "kf-node-2", "--dir", str(nodes.root)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    t0 = time.monotonic()  # the kill is done when the command returns
    assert "kf-node-2 killed" in out
    assert not alive(pid) and not answers(ip)  # SIGKILLed before the command returns
    last = renewed(api, "kf-node-2")
    wait_for(lambda: ready(node(api, "kf-node-2")) == "Unknown", timeout=90, interval=0.5,
             what="kf-node-2 NotReady (Unknown)")
    print(f"node kill -> NotReady in {time.monotonic() - t0:.1f} s")
    wait_for(lambda: (UNREACHABLE, "NoExecute") in taints(node(api, "kf-node-2")), timeout=60,
             what="kf-node-2 tainted unreachable")
    assert renewed(api, "kf-node-2") == last  # nobody renews a dead node's Lease
    # The node lifecycle controller marks its pods not ready; they stay bound to it (nothing is evicted yet).
    wait_for(lambda: next(c["status"] for c in api.get(f"/api/v1/namespaces/{NS}/pods/{victim['metadata']['name']}")
                          ["status"]["conditions"] if c["type"] == "Ready") == "False", timeout=60,
             what="the dead node's pod marked not ready")
    wait_for(lambda: all(ready(node(api, n)) == "True" for n in ("kf-node-1", "kf-node-3")), timeout=60,
             what="the other nodes Ready")
    assert nodes.node("status", "kf-node-2") == "kf-node-2\tDead"
    with pytest.raises(RuntimeError, match="dead"):
        nodes.node("heal", "kf-node-2")


def test_node_partition_keeps_pods_running_until_healed(nodes: RunningCluster, api: KubeClient) -> None:
    api.create(f"/api/v1/namespaces/{NS}/pods", server_pod("doomed", node_name="kf-node-3"))
    doomed = wait_for(lambda: (lambda p: p if p["status"].get("phase") == "Running" else None)(
        api.get(f"/api/v1/namespaces/{NS}/pods/doomed")), timeout=60, what="the doomed pod running")
    web = web_pods(api)["kf-node-3"]
    pids = [pid_of(web), pid_of(doomed)]
    t0 = time.monotonic()
    assert "partitioned" in nodes.node("partition", "kf-node-3")
    wait_for(lambda: ready(node(api, "kf-node-3")) == "Unknown", timeout=90, interval=0.5,
             what="kf-node-3 NotReady (Unknown)")
    print(f"node partition -> NotReady in {time.monotonic() - t0:.1f} s")
    wait_for(lambda: (UNREACHABLE, "NoExecute") in taints(node(api, "kf-node-3")), timeout=60,
             what="kf-node-3 tainted unreachable")
    last = renewed(api, "kf-node-3")
    # A pod force-deleted meanwhile: the partitioned node cannot hear of it, so its process runs on.
    api.delete(f"/api/v1/namespaces/{NS}/pods/doomed", {"gracePeriodSeconds": 0})
    with pytest.raises(NotFound):
        api.get(f"/api/v1/namespaces/{NS}/pods/doomed")
    time.sleep(2)
    assert all(alive(p) for p in pids) and answers(web["status"]["podIP"])
    assert renewed(api, "kf-node-3") == last
    assert nodes.node("status", "kf-node-3") == "kf-node-3\tPartitioned"

    t1 = time.monotonic()
    assert "healed" in nodes.node("heal", "kf-node-3")
    wait_for(lambda: ready(node(api, "kf-node-3")) == "True" and UNREACHABLE not in {
        k for k, _ in taints(node(api, "kf-node-3"))}, timeout=90, interval=0.5, what="kf-node-3 Ready and untainted")
    print(f"node heal -> Ready in {time.monotonic() - t1:.1f} s")
    assert renewed(api, "kf-node-3") != last
    wait_for(lambda: not alive(pids[1]), timeout=60, what="the pod deleted during the partition stopped on healing")
    assert alive(pids[0])
    wait_for(lambda: next(c["status"] for c in api.get(f"/api/v1/namespaces/{NS}/pods/{web['metadata']['name']}")
                          ["status"]["conditions"] if c["type"] == "Ready") == "True", timeout=60,
             what="the healed node's pod ready again")
    assert ready(node(api, "kf-node-2")) == "Unknown"  # the dead node stays dead
