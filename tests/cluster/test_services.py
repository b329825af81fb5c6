"""ClusterIP Services through the real kube-proxy, `kubectl port-forward` to a pod, a Service and a
ServingJob (through the API server to the node agent's kubelet endpoint), and pods reaching the API server
through the `kubernetes` Service with their own ServiceAccount token."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import Cluster, pod_logs, pod_phase, wait_for
from kubeforge_operator.ports import free_port
from kubeforge_trainer.data import digits
from minicluster.operator_process import OperatorProcess
from test_servingjob import claim_dir, close, infer_url, write_model

Obj = dict[str, Any]
PORT = 8080
BIG = bytes(range(256)) * 8192  # 2 MiB: many SPDY data frames
# Answers its pod name (/big: BIG); /fail makes /ready answer 503 (the readiness probe's path).
ECHO = """
import http.server, os, sys
failed = []
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/fail": failed.append(1)
        code = 503 if self.path == "/ready" and failed else 200
        body = bytes(range(256)) * 8192 if self.path == "/big" else os.environ["HOSTNAME"].encode()
        self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("", PORT), H).serve_forever()
""".replace("PORT", str(PORT))
# Requests a URL `n` times (a new connection each) and prints which pods answered, as JSON.
CLIENT = """
import collections, json, sys, time, urllib.request
out = {}
for url in sys.argv[2:]:
    seen = collections.Counter()
    for _ in range(int(sys.argv[1])):
        for attempt in range(50):
            try:
                seen[urllib.request.urlopen(url, timeout=5).read().decode()] += 1
                break
            except OSError:
                time.sleep(0.2)
    out[url] = dict(seen)
print(json.dumps(out))
"""


def echo_pod(name: str, labels: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                "name": "echo", "image": "python:3.11", "command": ["python", "-u", "-c", ECHO],
                "ports": [{"containerPort": PORT, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": PORT}, "periodSeconds": 1,
                                   "failureThreshold": 1}}]}}


def service(name: str, selector: dict[str, str]) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": "http"}]}}


def get(host: str, port: int = 80, path: str = "/", timeout: float = 5) -> str:
    return get_bytes(host, port, path, timeout).decode()


def get_bytes(host: str, port: int, path: str = "/", timeout: float = 5) -> bytes:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.read()
    finally:
        conn.close()


def ready_ips(cluster: Cluster, ns: str, selector: str) -> dict[str, str]:
    pods = cluster.client.get(f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")["items"]
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods if any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))}


def endpoints(cluster: Cluster, ns: str, svc: str) -> set[str]:
    """Ready endpoint addresses of a Service, as kube-proxy sees them."""
    slices = cluster.client.get(
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{svc}")
    return {a for s in slices["items"] for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
            for a in e["addresses"]}


@pytest.fixture
def backends(service_routing: Cluster, namespace: str) -> tuple[Cluster, str, str, dict[str, str]]:
    """Three echo pods behind Service `echo`: (cluster, namespace, ClusterIP, pod name -> IP)."""
    cluster = service_routing
    cluster.apply([echo_pod(f"echo-{i}", {"app": "echo"}) for i in range(3)] + [service("echo", {"app": "echo"})],
                  namespace)
    ips = wait_for(lambda: (lambda r: r if len(r) == 3 else None)(ready_ips(cluster, namespace, "app%3Decho")),
                   timeout=90, what="three ready echo pods")
    wait_for(lambda: endpoints(cluster, namespace, "echo") == set(ips.values()), timeout=30,
             what="the EndpointSlice to list the three pods")
    ip = cluster.client.get(f"/api/v1/namespaces/{namespace}/services/echo")["spec"]["clusterIP"]
    return cluster, namespace, ip, ips


def answers(ip: str, n: int) -> Counter[str]:
    """Which pods answered `n` requests (a new connection each) to ip:80; empty while it is refused."""
    try:
        return Counter(get(ip) for _ in range(n))
    except OSError:
        return Counter()


def test_cluster_ip_spreads_over_every_backend_from_host_and_pod(
        backends: tuple[Cluster, str, str, dict[str, str]]) -> None:
    cluster, ns, ip, ips = backends
    # kube-proxy programs endpoints a moment after the EndpointSlice lists them (longer on a busy machine)
    wait_for(lambda: set(answers(ip, 30)) == set(ips), timeout=30, interval=1,
             what="requests from the host to reach every backend")
    dns = f"http://echo.{ns}.svc.cluster.local/"
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "client", "image": "python:3.11",
                                                  "command": ["python", "-c", CLIENT, "60", f"http://{ip}/", dns]}]}},
                  ns)
    wait_for(lambda: pod_phase(cluster, ns, "client") in ("Succeeded", "Failed"), timeout=90, what="the client pod")
    assert pod_phase(cluster, ns, "client") == "Succeeded", pod_logs(cluster, ns, "client")
    seen = json.loads(pod_logs(cluster, ns, "client").strip().splitlines()[-1])
    assert set(seen[f"http://{ip}/"]) == set(ips), seen
    assert set(seen[dns]) == set(ips), seen


def test_unready_and_deleted_pods_leave_the_rotation(backends: tuple[Cluster, str, str, dict[str, str]]) -> None:
    cluster, ns, ip, ips = backends
    wait_for(lambda: set(answers(ip, 30)) == set(ips), timeout=20, what="all three backends answering")
    get(ips["echo-1"], PORT, "/fail")  # its readiness probe fails from now on
    cluster.client.delete(f"/api/v1/namespaces/{ns}/pods/echo-2")
    t0 = time.monotonic()
    wait_for(lambda: set(answers(ip, 30)) == {"echo-0"}, timeout=15, interval=0.5,
             what="only echo-0 answering once echo-1 is unready and echo-2 deleted")
    print(f"unready + deleted pods left the rotation in {time.monotonic() - t0:.1f} s")


def test_pod_reaches_itself_through_its_own_service(service_routing: Cluster, namespace: str) -> None:
    cluster = service_routing
    cluster.apply([echo_pod("solo", {"app": "solo"}), service("solo", {"app": "solo"})], namespace)
    wait_for(lambda: ready_ips(cluster, namespace, "app%3Dsolo"), timeout=60, what="solo ready")
    ip = cluster.client.get(f"/api/v1/namespaces/{namespace}/services/solo")["spec"]["clusterIP"]
    wait_for(lambda: endpoints(cluster, namespace, "solo"), timeout=30, what="solo's endpoint")
    # The hairpin request runs inside solo's own network namespace: through its Service, back to itself.
    ns_name = netns_of(cluster, namespace, "solo")
    out = wait_for(lambda: _in_netns(ns_name, ["python", "-c", CLIENT, "5", f"http://{ip}/"]), timeout=20,
                   what="a hairpin request")
    assert json.loads(out)[f"http://{ip}/"] == {"solo": 5}


def netns_of(cluster: Cluster, ns: str, pod: str) -> str:
    """The pod's network namespace (the node agent names them after the bridge; found by the pod's IP)."""
    ip = cluster.client.get(f"/api/v1/namespaces/{ns}/pods/{pod}")["status"]["podIP"]
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
        name = line.split()[0]
        if name.startswith(f"{cluster.info['bridge']}-") and ip in subprocess.run(
                ["ip", "-n", name, "-4", "addr", "show", "eth0"], capture_output=True, text=True).stdout:
            return name
    raise AssertionError(f"no network namespace with {ip}")


def _in_netns(netns: str, argv: list[str]) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else ""


def _load(targets: list[tuple[str, int]], n: int, workers: int) -> tuple[int, float]:
    """`n` requests spread over `targets` from `workers` threads: (successes, requests per second)."""
    def one(i: int) -> bool:
        host, port = targets[i % len(targets)]
        try:
            return bool(get(host, port, timeout=10))
        except OSError:
            return False

    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        ok = sum(pool.map(one, range(n)))
    return ok, n / (time.monotonic() - t0)


def test_cluster_ip_under_concurrent_load_loses_nothing(backends: tuple[Cluster, str, str, dict[str, str]]) -> None:
    _, _, ip, ips = backends
    wait_for(lambda: answers(ip, 1), timeout=20, what="the ClusterIP")
    ok, _ = _load([(ip, 80)], 2000, 32)
    assert ok == 2000, f"{2000 - ok} of 2000 requests through the ClusterIP failed"
    # kube-proxy's cost, side by side: ClusterIP vs the pod IPs directly, interleaved A B A B.
    ratios = []
    for _ in range(5):
        _, via_service = _load([(ip, 80)], 300, 32)
        _, direct = _load([(pod_ip, PORT) for pod_ip in ips.values()], 300, 32)
        ratios.append(via_service / direct)
    print(f"ClusterIP / pod IP requests per second: median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}; last direct {direct:.0f} req/s)")


def test_pod_lists_what_its_service_account_may_and_nothing_more(cluster: Cluster, namespace: str) -> None:
    """Through the `kubernetes` Service where this cluster routes ClusterIPs, else straight to the API server."""
    rbac = "rbac.authorization.k8s.io"
    cluster.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
        {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
         "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "pod-reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]},
    ], namespace)
    script = ("echo host=$KUBERNETES_SERVICE_HOST; kubectl get pods -o name; echo rc=$?; "
              "kubectl get pods -n kube-system -o name 2>&1; echo rc=$?; "
              "kubectl get secrets 2>&1; echo rc=$?")
    cluster.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "in-pod"}, "spec": {
        "serviceAccountName": "reader", "restartPolicy": "Never",
        "containers": [{"name": "kubectl", "image": "bitnami/kubectl", "command": ["sh", "-c", script],
                        # no kubeconfig, as in a real pod: kubectl falls back to the in-cluster config
                        "env": [{"name": "KUBECONFIG", "value": "/nonexistent"}]}]}},
                  namespace)
    wait_for(lambda: pod_phase(cluster, namespace, "in-pod") in ("Succeeded", "Failed"), timeout=90,
             what="the in-pod kubectl")
    out = pod_logs(cluster, namespace, "in-pod")
    lines = out.splitlines()
    assert lines[0] == f"host={'10.96.0.1' if cluster.routes_services else cluster.gateway}", out
    assert "pod/in-pod" in lines and lines[lines.index("pod/in-pod") + 1] == "rc=0", out
    assert 'pods is forbidden: User "system:serviceaccount:' + namespace + ':reader"' in out, out
    assert 'cannot list resource "pods" in API group "" in the namespace "kube-system"' in out, out
    assert 'secrets is forbidden' in out, out
    assert out.count("rc=1") == 2, out


@contextlib.contextmanager
def port_forward(cluster: Cluster, ns: str, target: str, remote: int,
                 websockets: bool = True) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """`kubectl port-forward TARGET LOCAL:REMOTE` running, as a user types it: (LOCAL, the process).
    kubectl tunnels SPDY through a WebSocket to the API server unless `websockets` is off (plain SPDY)."""
    local = free_port()
    env = {**os.environ, "KUBECTL_PORT_FORWARD_WEBSOCKETS": str(websockets).lower()}
    proc = subprocess.Popen(["kubectl", f"--kubeconfig={cluster.kubeconfig}", "-n", ns, "port-forward", target,
                             f"{local}:{remote}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "Forwarding from 127.0.0.1:LOCAL -> PORT" once it listens
        assert re.match(rf"Forwarding from 127\.0\.0\.1:{local} -> \d+", first), \
            f"kubectl port-forward did not start: {first}{proc.stderr.read() if proc.poll() is not None else ''}"
        yield local, proc
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("websockets", [True, False], ids=["websocket-tunnel", "spdy"])
def test_kubectl_port_forward_to_a_pod_and_to_a_service(cluster: Cluster, namespace: str, websockets: bool) -> None:
    cluster.apply([echo_pod("web", {"app": "web"}), service("web", {"app": "web"})], namespace)
    wait_for(lambda: ready_ips(cluster, namespace, "app%3Dweb"), timeout=60, what="web ready")
    with port_forward(cluster, namespace, "pod/web", PORT, websockets) as (local, _):
        assert get("127.0.0.1", local) == "web"
        assert get("127.0.0.1", local) == "web"  # a second connection: a new pair of streams
        big = get_bytes("127.0.0.1", local, "/big", timeout=30)
        assert len(big) == len(BIG) and hashlib.sha256(big).digest() == hashlib.sha256(BIG).digest()
        with ThreadPoolExecutor(8) as pool:  # connections at once share the one session
            assert list(pool.map(lambda _: get("127.0.0.1", local, timeout=30), range(16))) == ["web"] * 16
    with port_forward(cluster, namespace, "svc/web", 80, websockets) as (local, _):  # port 80 -> targetPort "http"
        assert get("127.0.0.1", local) == "web"


@pytest.mark.embedded("writes the model through the claim's hostPath on this machine")
def test_kubectl_port_forward_to_a_servingjob_answers_an_inference_request(
        cluster: Cluster, operator: OperatorProcess, namespace: str) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
                   "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}},
                  namespace)
    wait_for(lambda: cluster.client.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/models")
             .get("spec", {}).get("volumeName"), 60, what="the claim to bind")
    model = write_model(claim_dir(cluster, namespace, "models") / "a", 1)
    cluster.apply({"apiVersion": "kubeforge.dev/v1alpha1", "kind": "ServingJob", "metadata": {"name": "digits"},
                   "spec": {"model": {"uri": "pvc://models/a"}}}, namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "sj/digits", "--timeout=180s")
    rows = digits().x_eval[:2]
    with port_forward(cluster, namespace, "svc/digits", 80) as (local, _):  # as the docs tell a user
        out = infer_url(f"http://127.0.0.1:{local}/v2/models/digits/infer", rows.tolist())
    assert close(out, model(rows).detach())


def test_kubectl_port_forward_to_a_closed_port_says_why(cluster: Cluster, namespace: str) -> None:
    cluster.apply(echo_pod("quiet", {"app": "quiet"}), namespace)
    wait_for(lambda: ready_ips(cluster, namespace, "app%3Dquiet"), timeout=60, what="quiet ready")
    with port_forward(cluster, namespace, "pod/quiet", 9) as (local, proc):
        with pytest.raises(OSError):  # the connection closes without an answer
            get_bytes("127.0.0.1", local)
        proc.wait(30)  # kubectl ends the session on an error from the pod side, as with any kubelet
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert f"error forwarding port 9 to pod {namespace}/quiet" in err and "refused" in err.lower(), err
