"""The operator's Kubernetes API adapter (aiohttp, JSON dicts): credentials from a kubeconfig or
the in-cluster service account, the few calls the reconciler makes, and a count of writes."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from . import metrics

Obj = dict[str, Any]
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _kind(path: str) -> str:
    """The resource a request path names (`pods`, `events`, `trainingjobs/status`...)."""
    parts = path.split("?")[0].strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2:]
        return "/".join(rest[::2]) if len(rest) > 2 else rest[0]
    return parts[-1]


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str | None = None
    ca_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    namespace: str = "default"

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> Credentials:
        """From `kubeconfig` (or $KUBECONFIG, ~/.kube/config), else the in-cluster service account."""
        path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        if Path(path).exists():
            return cls._from_kubeconfig(Path(path))
        if (SA_DIR / "token").exists():
            host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
            return cls(f"https://{host}:{port}", (SA_DIR / "token").read_text().strip(), str(SA_DIR / "ca.crt"),
                       namespace=(SA_DIR / "namespace").read_text().strip())
        raise RuntimeError("no kubeconfig and not running in a cluster")

    @classmethod
    def _from_kubeconfig(cls, path: Path) -> Credentials:
        cfg = yaml.safe_load(path.read_text())
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])

        def file(key: str, data_key: str, base: dict[str, Any]) -> str | None:
            if base.get(key):
                return str((path.parent / base[key]).resolve())
            if base.get(data_key):
                f = tempfile.NamedTemporaryFile(delete=False, suffix=".pem")  # noqa: SIM115 (lives with the process)
                f.write(base64.b64decode(base[data_key]))
                f.close()
                return f.name
            return None

        return cls(cluster["server"], user.get("token"), file("certificate-authority", "certificate-authority-data",
                                                              cluster),
                   file("client-certificate", "client-certificate-data", user),
                   file("client-key", "client-key-data", user), ctx.get("namespace", "default"))

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_path)
        if self.cert_path and self.key_path:
            ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


class Kube:
    """The calls the reconciler makes. `writes` counts every mutating request by verb."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.writes: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._pods: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.creds.token}"} if self.creds.token else {}
            self._session = aiohttp.ClientSession(
                base_url=self.creds.server, headers=headers,
                connector=aiohttp.TCPConnector(ssl=self.creds.ssl_context(), limit=64),
                timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def close(self) -> None:
        for s in (self._session, self._pods):
            if s is not None:
                await s.close()
        self._session = self._pods = None

    async def progress(self, ip: str, port: int, since: int) -> Obj | None:
        """Rank 0's JSON progress (with history points after `since`), or None if it does not answer."""
        if self._pods is None:
            self._pods = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        try:
            async with self._pods.get(f"http://{ip}:{port}/progress", params={"since": str(since)}) as r:
                return dict(await r.json()) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                      params: dict[str, str] | None = None) -> Obj:
        if method != "GET":
            self.writes[method] += 1
            metrics.API_WRITES.labels(method, _kind(path)).inc()
        s = await self.session()
        async with s.request(method, path, json=body, params=params, headers={"Content-Type": content_type}) as r:
            text = await r.text()
            if r.status >= 400:
                raise ApiError(r.status, text)
            return dict(await r.json(content_type=None)) if text else {}

    async def list(self, path: str, label_selector: str) -> list[Obj]:
        return list((await self.request("GET", path, params={"labelSelector": label_selector}))["items"])

    async def create(self, obj: Obj) -> bool:
        """Create `obj`; False when it already exists (deterministic names make that safe)."""
        ns = obj["metadata"]["namespace"]
        plural = {"Pod": "pods", "Service": "services"}[obj["kind"]]
        try:
            await self.request("POST", f"/api/v1/namespaces/{ns}/{plural}", obj)
            return True
        except ApiError as e:
            if e.status == 409:
                return False
            raise

    async def delete_pod(self, ns: str, name: str, uid: str) -> None:
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            await self.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", body)
        except ApiError as e:
            if e.status not in (404, 409):  # gone already, or a different pod by now
                raise

    async def patch_status(self, path: str, status: Obj, resource_version: str) -> Obj:
        """Merge-patch status, guarded by resourceVersion: a 409 means the pass saw stale data."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return await self.request("PATCH", f"{path}/status", body, "application/merge-patch+json")

    async def delete(self, path: str) -> None:
        try:
            await self.request("DELETE", path, {"propagationPolicy": "Background"})
        except ApiError as e:
            if e.status != 404:
                raise

    async def event(self, involved: Obj, type_: str, reason: str, message: str, now: str) -> None:
        meta = involved["metadata"]
        ns = meta["namespace"]
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": ns},
            "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": meta["name"],
                               "namespace": ns, "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason, "message": message[:1024], "firstTimestamp": now, "lastTimestamp": now,
            "count": 1, "source": {"component": "kubeforge-operator"}, "reportingComponent": "kubeforge-operator",
        }
        await self.request("POST", f"/api/v1/namespaces/{ns}/events", body)
