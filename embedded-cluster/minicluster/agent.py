"""The node agent: registers a Node (capacity, labels, taints, pod range as given), keeps its Lease
fresh and its Ready condition true, runs the pods bound to it (see `pods.PodWorker`), and serves
container logs, port-forward, exec and resource metrics on the kubelet endpoint (`kubectl logs`,
`port-forward`, `exec`; metrics-server's `/metrics/resource`). It acts as `system:node:<name>`.
Cluster DNS and storage are the cluster's, not a node's (`clusterwide.py`).

A cluster may run several agents in one process; each can fail as a machine does: `kill` (the
node dies: its pods' processes are SIGKILLed, nothing more reaches the API server, its kubelet
endpoint closes) or `partition` (the node is cut off from the API server: no Lease, node or pod
status goes out and no pod change comes in, while its pods' processes keep running) until
`heal`, after which it re-posts its status as a kubelet reconnecting does."""

from __future__ import annotations

import logging
import os
import platform
import re
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from . import portforward, remotecommand, spdy
from .containers import CgroupParents, now
from .kubeapi import ApiError, Informer, KubeClient, NotFound
from .network import PodRange
from .pods import PodWorker
from .portforward import PortForwardSession
from .remotecommand import ExecRequest, ExecSession
from .resourcemetrics import CONTENT_TYPE, render

Obj = dict[str, Any]
log = logging.getLogger(__name__)
NODE_CPUS_ENV = "KUBEFORGE_NODE_CPUS"  # the CPUs the node advertises, when not the machine's own


def machine_cpus() -> str:
    """The machine's CPUs as a Kubernetes quantity ("2", "1500m"): the CPUs this process may run on,
    capped by the CFS quota of its cgroup and every ancestor (a container's limit). Rounded down to
    the millicore, so the scheduler never places more than the machine can run."""
    from kubeforge_trainer.train.cpus import cgroup_cpu_quota  # here: it imports the trainer package

    cpus = float(len(os.sched_getaffinity(0)))
    quota = cgroup_cpu_quota()
    milli = max(1, int(min(cpus, quota or cpus) * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def node_cpus(given: str | None = None, env: dict[str, str] | None = None) -> str:
    """What the node advertises: `given` (the `--cpus` flag), else `KUBEFORGE_NODE_CPUS`, else the
    machine's CPUs. Raises ValueError for anything but a CPU quantity ("4", "0.5", "500m")."""
    value = given or (os.environ if env is None else env).get(NODE_CPUS_ENV) or machine_cpus()
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?|[0-9]+m", value) or float(value.removesuffix("m")) <= 0:
        raise ValueError(f"not a CPU quantity: {value!r} (want e.g. 4, 0.5 or 500m)")
    return value


@dataclass(frozen=True)
class AgentSettings:
    node_name: str
    state_dir: Path
    cpu: str = field(default_factory=node_cpus)
    memory: str = "64Gi"
    pods: int = 110
    gpus: int = 0
    backoff: tuple[float, float] = (1.0, 20.0)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    pod_cidr: str | None = None
    renew_seconds: float = 10.0  # Lease renewal (the kubelet: every 10 s, lasting 40 s)
    lease_seconds: int = 40
    status_seconds: float = 10.0  # how often the Node's Ready condition is checked (nodeStatusUpdateFrequency)


class NodeClient:
    """The `pods.Api` protocol over the node's own credentials."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def patch_pod_status(self, ns: str, name: str, status: Obj) -> None:
        """Dropped while the node is cut off (the agent sends every pod's status again on reconnecting):
        a pod's worker must not take a partition for a failure of its own and tear the pod down."""
        if self.client.link_down.is_set():
            return
        try:
            self.client.patch(f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": status}, "strategic-merge")
        except NotFound:
            pass
        except OSError:
            if not self.client.link_down.is_set():  # cut off while sending
                raise

    def finish_delete(self, ns: str, name: str, uid: str) -> None:
        if self.client.link_down.is_set():  # the pod stays Terminating, as behind a dead kubelet
            return
        try:
            self.client.delete(f"/api/v1/namespaces/{ns}/pods/{name}",
                               {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}})
        except ApiError as e:
            if e.status not in (404, 409):
                raise
        except OSError:
            if not self.client.link_down.is_set():
                raise

    def create(self, path: str, body: Obj) -> Obj:
        return self.client.create(path, body)

    def get(self, path: str) -> Obj:
        # The Node authorizer learns about a new pod's references a moment after the pod.
        for _ in range(20):
            try:
                return self.client.get(path)
            except ApiError as e:
                if e.status != 403:
                    raise
                time.sleep(0.25)
        return self.client.get(path)


class NodeAgent:
    def __init__(self, node: KubeClient, admin: KubeClient, settings: AgentSettings, network: PodRange,
                 cgroups: CgroupParents) -> None:
        """`node` acts as the node (and is what a partition cuts); `admin` only sets the labels a node
        may not set on itself. `network` is the node's range on the cluster's bridge, which is up
        already (the API server listens on its gateway); the cluster takes it and `cgroups` down."""
        self.node = node
        self.admin = admin
        self.s = settings
        self.api = NodeClient(node)
        self.network = network
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.state = "Running"  # or Partitioned, Dead
        self.wake = threading.Event()  # the heartbeat's: post status now (after a partition)
        self.resync = False  # post every pod's status on the next heartbeat
        self.pods_root = settings.state_dir / "pods"
        self.cgroups = cgroups
        self.base_env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": "/root", "LANG": "C.UTF-8",
        }
        self.pod_informer = Informer(node, f"/api/v1/pods?fieldSelector=spec.nodeName%3D{settings.node_name}",
                                     self._on_pod)
        self.log_server: ThreadingHTTPServer | None = None

    def set_api_endpoint(self, host: str, port: int) -> None:
        """Where pods find the API server (`KUBERNETES_SERVICE_HOST`/`PORT`, which the kubelet sets in
        every container): the `kubernetes` Service's ClusterIP where kube-proxy routes it, else the
        API server's own address. Call before pods run."""
        self.base_env.update({"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
                              "KUBERNETES_SERVICE_PORT_HTTPS": str(port)})

    # ----- start / stop -----
    def start(self) -> None:
        self.pods_root.mkdir(parents=True, exist_ok=True)
        log_port = self._start_log_server()
        self._register(log_port)
        threading.Thread(target=self._heartbeat, name=f"heartbeat-{self.s.node_name}", daemon=True).start()
        self.pod_informer.start()
        self.pod_informer.synced.wait(30)

    def stop(self) -> None:
        self.stopped.set()
        self.pod_informer.stop()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.deleting.set()
            w.wake.set()
        for w in workers:
            w.thread.join(60)
        if self.log_server:
            self.log_server.shutdown()
            self.log_server = None

    # ----- failures -----
    def kill(self) -> str:
        """The node dies: every process of its pods is SIGKILLed now, and the agent says nothing more
        to the API server (its Lease, node and pod statuses stay as they were; its pods stay bound to
        it until something deletes them). There is no coming back: a new node would be a new agent."""
        with self.lock:
            if self.state == "Dead":
                return f"{self.s.node_name} is dead already"
            self.state = "Dead"
            self.node.link_down.set()
            workers = list(self.workers.values())
        self.stopped.set()
        self.wake.set()
        self.pod_informer.stop()
        for w in workers:
            w.kill()
        for w in workers:
            w.thread.join(30)
        if self.log_server:
            self.log_server.shutdown()
            self.log_server = None
        return f"{self.s.node_name} killed: {len(workers)} pod(s)' processes SIGKILLed, Lease no longer renewed"

    def partition(self) -> str:
        """Cut the node off the API server: no Lease renewal, node or pod status, and no pod changes
        seen (its watch is dropped and cannot reconnect); its pods' processes keep running."""
        if self.state == "Dead":
            raise ValueError(f"{self.s.node_name} is dead: a killed node cannot be partitioned")
        with self.lock:
            if self.state == "Partitioned":
                return f"{self.s.node_name} is partitioned already"
            self.state = "Partitioned"
            self.node.link_down.set()
            count = len(self.workers)
        self.pod_informer.reconnect()
        return f"{self.s.node_name} partitioned: Lease and status no longer renewed, {count} pod(s) keep running"

    def heal(self) -> str:
        """End a partition: the agent reconnects, lists its pods again (acting on what changed meanwhile,
        deletions included), renews its Lease and posts its node and pod statuses."""
        if self.state == "Dead":
            raise ValueError(f"{self.s.node_name} is dead: a killed node does not come back (restart the cluster)")
        if self.state == "Running":
            return f"{self.s.node_name} is not partitioned"
        self.state = "Running"
        self.node.link_down.clear()
        self.resync = True
        self.wake.set()
        return f"{self.s.node_name} healed: renewing its Lease and posting its status again"

    # ----- the Node and its Lease -----
    def _register(self, log_port: int) -> None:
        name = self.s.node_name
        capacity = {"cpu": self.s.cpu, "memory": self.s.memory, "pods": str(self.s.pods),
                    "ephemeral-storage": "100Gi"}
        if self.s.gpus:
            capacity["nvidia.com/gpu"] = str(self.s.gpus)
        body: Obj = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}
        spec: Obj = {}
        if self.s.pod_cidr:
            spec |= {"podCIDR": self.s.pod_cidr, "podCIDRs": [self.s.pod_cidr]}
        if self.s.taints:  # as the kubelet's --register-with-taints
            spec["taints"] = list(self.s.taints)
        if spec:
            body["spec"] = spec
        try:
            self.node.create("/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
        if self.s.labels:  # NodeRestriction keeps a node from setting most kubernetes.io labels on itself
            self.admin.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": dict(self.s.labels)}})
        t = now()
        conds = [{"type": ctype, "status": "False", "reason": f"KubeletHas{reason}", "message": "ok",
                  "lastHeartbeatTime": t, "lastTransitionTime": t}
                 for ctype, reason in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                                       ("PIDPressure", "SufficientPID"))]
        conds.append(self._ready_condition(t))
        status = {
            "capacity": capacity, "allocatable": capacity, "conditions": conds,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
            "nodeInfo": {"machineID": name, "systemUUID": name, "bootID": name,
                         "kernelVersion": platform.release(), "osImage": "kubeforge node agent",
                         "containerRuntimeVersion": "kubeforge://0.1", "kubeletVersion": "v1.34.4",
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
        }
        self.node.patch(f"/api/v1/nodes/{name}/status", {"status": status}, "strategic-merge")

    @staticmethod
    def _ready_condition(t: str) -> Obj:
        return {"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "node agent is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t}

    def _heartbeat(self) -> None:
        """Renew the Lease every `renew_seconds`; every `status_seconds`, and at once after a partition,
        check the Node's Ready condition: where the node lifecycle controller marked it Unknown (the
        Lease lapsed), post Ready again and every pod's status (it marked them not ready too)."""
        name = self.s.node_name
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        next_status = time.monotonic() + self.s.status_seconds
        while not self.stopped.is_set():
            if self.state == "Running":
                renew = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                spec = {"holderIdentity": name, "leaseDurationSeconds": self.s.lease_seconds, "renewTime": renew}
                try:
                    try:
                        self.node.patch(path, {"spec": spec})
                    except NotFound:
                        self.node.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                                         {"metadata": {"name": name}, "spec": spec})
                    if self.resync or time.monotonic() >= next_status:
                        next_status = time.monotonic() + self.s.status_seconds
                        self._sync_status(self.resync)
                        self.resync = False
                except (ApiError, OSError) as e:
                    if self.state == "Running":
                        log.warning("%s: lease renewal failed: %s", name, e)
            self.wake.wait(self.s.renew_seconds)
            self.wake.clear()

    def _sync_status(self, reconnected: bool) -> None:
        """Post Ready where the Node is not; after a partition, and whenever Ready had to be posted,
        also every pod's status, and end the pods deleted while the node could not see it."""
        node = self.node.get(f"/api/v1/nodes/{self.s.node_name}")
        conditions: list[Obj] = node.get("status", {}).get("conditions") or []
        ready: Obj = next((c for c in conditions if c.get("type") == "Ready"), {})
        if ready.get("status") == "True" and not reconnected:
            return
        if ready.get("status") != "True":
            log.info("%s: Ready was %s (%s); posting ready status", self.s.node_name, ready.get("status"),
                     ready.get("reason"))
            self.node.patch(f"/api/v1/nodes/{self.s.node_name}/status",
                            {"status": {"conditions": [self._ready_condition(now())]}}, "strategic-merge")
        pods = self.node.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.s.node_name}")
        live = {p["metadata"]["uid"] for p in pods.get("items") or []}
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            if w.uid in live:
                w.resend()
            else:
                w.deleting.set()
                w.wake.set()

    # ----- pods -----
    def _on_pod(self, etype: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            if self.state != "Running":  # a partitioned node sees nothing; it lists its pods again on healing
                return
            worker = self.workers.get(uid)
            if worker is None:
                if etype == "DELETED" or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    if pod["metadata"].get("deletionTimestamp") and etype != "DELETED":
                        self.api.finish_delete(pod["metadata"]["namespace"], pod["metadata"]["name"], uid)
                    return
                worker = PodWorker(pod, self.api, self.network, self.pods_root, self.network.gateway,
                                   self.base_env, self.cgroups, self.s.backoff, self._forget)
                self.workers[uid] = worker
                worker.thread.start()
        if etype == "DELETED":
            worker.deleting.set()
            worker.wake.set()
        else:
            worker.update(pod)

    def _forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    def find_worker(self, ns: str, name: str) -> PodWorker | None:
        with self.lock:
            for w in self.workers.values():
                if w.meta["namespace"] == ns and w.meta["name"] == name:
                    return w
        return None

    def resource_metrics(self) -> bytes:
        with self.lock:
            workers = list(self.workers.values())
        return render(s for w in workers for s in w.resource_samples())

    # ----- kubelet log endpoint -----
    def _start_log_server(self) -> int:
        class Handler(KubeletHandler):
            agent = self

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.s.tls_cert and self.s.tls_key:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.s.tls_cert, self.s.tls_key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.log_server = server
        threading.Thread(target=server.serve_forever, name="logs", daemon=True).start()
        return int(server.server_address[1])


class KubeletHandler(BaseHTTPRequestHandler):
    """The kubelet endpoint of one node agent: `/containerLogs/<ns>/<pod>/<container>` (`kubectl logs`,
    with `tailLines`, `limitBytes`, `previous` and `follow`), `/portForward/<ns>/<pod>` (`kubectl
    port-forward`, see `portforward`), `/exec/<ns>/<pod>/<container>` (`kubectl exec`, see
    `remotecommand`) and `/metrics/resource` (metrics-server).
    `NodeAgent._start_log_server` binds `agent` in a subclass of its own."""

    agent: ClassVar[NodeAgent]

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        url = urllib.parse.urlparse(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) in (3, 4) and parts[0] == "portForward":
            self._port_forward(parts[1], parts[2])
        elif len(parts) in (4, 5) and parts[0] == "exec":
            self._exec(parts[1], parts[2], parts[-1], url.query)
        else:
            self._send(404, "text/plain", f"no such kubelet endpoint: {self.command} {url.path}\n".encode())

    def _port_forward(self, ns: str, name: str) -> None:
        worker = self.agent.find_worker(ns, name)
        ip = worker.pod_ip if worker else None
        if ip is None:
            self._send(404, "text/plain", f"pod {ns}/{name} is not running on this node\n".encode())
            return
        self._upgrade(portforward.PROTOCOL,
                      lambda: PortForwardSession(self.connection, ip, f"{ns}/{name}", self.agent.stopped).run())

    def _exec(self, ns: str, name: str, container: str, query: str) -> None:
        worker = self.agent.find_worker(ns, name)
        pid = worker.container_pid(container) if worker else None
        if pid is None:
            self._send(404, "text/plain", f"container {container} is not running in pod {ns}/{name}\n".encode())
            return
        request = ExecRequest.parse(query)
        if isinstance(request, str):
            self._send(400, "text/plain", request.encode())
            return
        self._upgrade(remotecommand.PROTOCOL,
                      lambda: ExecSession(self.connection, pid, request, self.agent.stopped).run())

    def _upgrade(self, protocol: str, serve: Callable[[], None]) -> None:
        """Answer an upgrade to SPDY/3.1 speaking `protocol`, then hand the connection to `serve`."""
        code, chosen = spdy.negotiate(self.headers.get("Connection", ""), self.headers.get("Upgrade", ""),
                                 self.headers.get_all("X-Stream-Protocol-Version") or [], [protocol])
        if code != 200:
            self._send(code, "text/plain", chosen.encode())
            return
        self.close_connection = True
        self.wfile.write(spdy.switching(chosen))
        serve()

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        if url.path == "/metrics/resource":
            self._send(200, CONTENT_TYPE, self.agent.resource_metrics())
            return
        parts = url.path.strip("/").split("/")
        if parts[0] in ("portForward", "exec"):
            self.do_POST()
            return
        q = dict(urllib.parse.parse_qsl(url.query))
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404)
            return
        worker = self.agent.find_worker(parts[1], parts[2])
        path = worker.log_file(parts[3], q.get("previous") == "true") if worker else None
        if worker is None or path is None:
            self.send_error(404, f"no logs for container {parts[3]} in pod {parts[1]}/{parts[2]}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        data = path.read_bytes()
        if "tailLines" in q:
            data = b"".join(data.splitlines(keepends=True)[-int(q["tailLines"]):])
        if "limitBytes" in q:
            data = data[: int(q["limitBytes"])]
        self.wfile.write(data)
        if q.get("follow") == "true":
            self._follow(worker, parts[3], path, len(path.read_bytes()))

    def _send(self, code: int, content_type: str, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _follow(self, worker: PodWorker, container: str, path: Path, offset: int) -> None:
        while not worker.deleting.is_set() and not self.agent.stopped.is_set():
            data = path.read_bytes()[offset:]
            if data:
                self.wfile.write(data)
                self.wfile.flush()
                offset += len(data)
            if worker.log_file(container, False) != path:
                return
            c = next((c for c in worker.init + worker.main if c.name == container), None)
            if c is None or (c.proc is not None and c.proc.poll() is not None and not data):
                return
            time.sleep(0.2)
