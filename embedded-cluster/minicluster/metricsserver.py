"""Resource metrics: the real metrics-server (sigs.k8s.io/metrics-server, its own binary: its
dependencies clash with the control plane's) scraping the node agent's `/metrics/resource`,
registered as the aggregated API `v1beta1.metrics.k8s.io` so `kubectl top` and the
HorizontalPodAutoscaler work.

It runs on the host under a static-token identity of its own and listens on the bridge gateway,
which a selector-less Service and a hand-written EndpointSlice point at (the API server dials the
endpoint directly: `--enable-aggregator-routing`). Start waits until the APIService is Available;
stop deletes the APIService first, because an unavailable aggregated API makes namespace deletion
hang on discovery."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .kubeapi import ApiError, KubeClient, NotFound

Obj = dict[str, Any]
NAME = "metrics-server"
NAMESPACE = "kube-system"
API_SERVICE = "v1beta1.metrics.k8s.io"
RESOLUTION_SECONDS = 10  # metrics-server's minimum


def rbac(user: str) -> list[Obj]:
    """What metrics-server needs: read nodes' metrics and pods, delegate authn/authz, read the
    request-header configuration; and the aggregated role that lets viewers read metrics."""
    subject = [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]
    rbac_api = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": rbac_api, "kind": "ClusterRole", "metadata": {"name": "kubeforge:metrics-server"},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": rbac_api, "kind": "ClusterRole", "metadata": {
            "name": "system:aggregated-metrics-reader", "labels": {
                f"rbac.authorization.k8s.io/aggregate-to-{r}": "true" for r in ("view", "edit", "admin")}},
         "rules": [{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": rbac_api, "kind": "ClusterRoleBinding", "metadata": {"name": "kubeforge:metrics-server"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "kubeforge:metrics-server"}, "subjects": subject},
        {"apiVersion": rbac_api, "kind": "ClusterRoleBinding",
         "metadata": {"name": "kubeforge:metrics-server:auth-delegator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:auth-delegator"}, "subjects": subject},
        {"apiVersion": rbac_api, "kind": "RoleBinding",
         "metadata": {"name": "kubeforge:metrics-server-auth-reader", "namespace": NAMESPACE},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "extension-apiserver-authentication-reader"}, "subjects": subject},
    ]


def endpoint_objects(address: str, port: int) -> list[Obj]:
    """A Service without a selector, its EndpointSlice (address:port) and the APIService."""
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "namespace": NAMESPACE},
         "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {
             "kubernetes.io/service-name": NAME,
             "endpointslice.kubernetes.io/managed-by": "kubeforge.dev-minicluster"}},
         "addressType": "IPv4", "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": API_SERVICE},
         "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                  "versionPriority": 100, "insecureSkipTLSVerify": True,
                  "service": {"name": NAME, "namespace": NAMESPACE, "port": 443}}},
    ]


_PATHS = {
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings",
    "Service": f"/api/v1/namespaces/{NAMESPACE}/services",
    "EndpointSlice": f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices",
    "APIService": "/apis/apiregistration.k8s.io/v1/apiservices",
}


def _create(admin: KubeClient, obj: Obj) -> None:
    try:
        admin.create(_PATHS[obj["kind"]], obj)
    except ApiError as e:
        if e.status != 409:
            raise


class MetricsServer:
    """metrics-server as a child process, registered with the API server while it runs."""

    def __init__(self, binary: Path, kubeconfig: Path, user: str, ca: Path, state_dir: Path, log_dir: Path,
                 address: str, port: int) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.user = user
        self.ca = ca
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.address = address
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.registered = False

    def start(self, admin: KubeClient, timeout: float = 60.0) -> None:
        for obj in rbac(self.user):
            _create(admin, obj)
        self._spawn()
        for obj in endpoint_objects(self.address, self.port):
            _create(admin, obj)
        self.registered = True
        self._wait_available(admin, timeout)

    def _spawn(self) -> None:
        k = self.kubeconfig
        self.state_dir.mkdir(parents=True, exist_ok=True)
        args = [
            f"--kubeconfig={k}", f"--authentication-kubeconfig={k}", f"--authorization-kubeconfig={k}",
            f"--bind-address={self.address}", f"--secure-port={self.port}", f"--cert-dir={self.state_dir}",
            "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port",
            f"--kubelet-certificate-authority={self.ca}", f"--metric-resolution={RESOLUTION_SECONDS}s",
            "--kubelet-request-timeout=5s", "--v=1",
        ]
        out = (self.log_dir / "metrics-server.log").open("ab")
        self.proc = subprocess.Popen([str(self.binary), *args], stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def _wait_available(self, admin: KubeClient, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        last: Obj = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"metrics-server exited with {self.proc.returncode}; see metrics-server.log")
            with contextlib.suppress(ApiError, OSError):
                obj = admin.get(f"{_PATHS['APIService']}/{API_SERVICE}")
                last = next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Available"),
                            {})
                if last.get("status") == "True":
                    return
            time.sleep(0.25)
        raise TimeoutError(f"APIService {API_SERVICE} not Available: {last}")

    def stop(self, admin: KubeClient) -> None:
        """Unregister first (an unavailable aggregated API blocks namespace deletion), then stop."""
        if self.registered:
            for kind, name in (("APIService", API_SERVICE), ("EndpointSlice", NAME), ("Service", NAME)):
                with contextlib.suppress(NotFound, ApiError, OSError):
                    admin.delete(f"{_PATHS[kind]}/{name}")
            self.registered = False
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
