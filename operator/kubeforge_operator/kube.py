"""The operator's Kubernetes API adapter (aiohttp, JSON dicts): the few calls the controller makes,
a count of writes, and the progress client for pods. Credentials come from kopf's own login (the
same `ConnectionInfo` kopf uses), so there is one credential source; a 401 logs in again.

The pod client (training progress, servers' metrics) trusts nothing a pod says: no redirects, no
decompression, a capped body, a deadline, every error contained; progress is validated by the typed
contract, and metrics are parsed by the ServingJob kind, only the gauge it needs."""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubeforge_api.constants import GROUP, LABEL_MANAGED_BY, MANAGED_BY, VERSION
from kubeforge_api.contracts import ProgressDoc, parse_progress

from . import fastjson, metrics

Obj = dict[str, Any]
MAX_PROGRESS_BYTES = 64 * 1024
MAX_METRICS_BYTES = 512 * 1024  # a language-model server's /metrics is about 27 KiB
POD_TIMEOUT_S = 2.0  # a whole request to a pod (progress, metrics)
KEEPALIVE_S = 90.0  # idle connections kept (client-go's idle timeout): a burst after a lull needs no new TLS handshakes
KUEUE_API = "kueue.x-k8s.io/v1beta2"  # the version Kueue v0.17 serves and stores
# kind -> (API prefix, plural) for every child kind the operator creates.
RESOURCES: dict[str, tuple[str, str]] = {
    "Pod": ("/api/v1", "pods"),
    "Service": ("/api/v1", "services"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "Workload": (f"/apis/{KUEUE_API}", "workloads"),
}
CLUSTER_RESOURCES: dict[str, str] = {"Node": "/api/v1/nodes",
                                     "ResourceFlavor": f"/apis/{KUEUE_API}/resourceflavors",
                                     "WorkloadPriorityClass": f"/apis/{KUEUE_API}/workloadpriorityclasses"}


@dataclass(frozen=True)
class Misbehaved:
    """What a progress endpoint did wrong, in words for a Warning Event."""

    problem: str


def judge_progress(body: bytes) -> ProgressDoc | Misbehaved:
    """A progress reply as the typed document, or what is wrong with it (never raises)."""
    if len(body) > MAX_PROGRESS_BYTES:
        return Misbehaved(f"answered more than {MAX_PROGRESS_BYTES} bytes")
    doc = parse_progress(body)
    if doc is not None:
        return doc
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return Misbehaved("answered a body that is not JSON")
    return Misbehaved("answered JSON that is not a valid progress document (types, ranges, sizes)")


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to `limit` bytes of a body: one read may return less than asked (what the network has
    delivered so far), so read until the end or the limit."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(path: str) -> str:
    """The resource a request path names (`pods`, `trainingjobs/status`...)."""
    parts = path.split("?")[0].strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2:]
        return "/".join(rest[::2]) if len(rest) > 2 else rest[0]
    return parts[-1]


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body

    @property
    def message(self) -> str:
        """The API server's own message (from its Status object), one line."""
        try:
            text = str(json.loads(self.body).get("message", ""))
        except (ValueError, AttributeError):
            text = self.body
        return " ".join(text.split())[:512]


def _pem(data: str | bytes) -> bytes:
    """kubeconfig `*-data` fields are base64 of PEM; tolerate PEM given as is."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)


def ssl_context(info: Any) -> ssl.SSLContext:
    """TLS settings from a kopf `ConnectionInfo`; in-memory keys never outlive this call on disk."""
    ctx = ssl.create_default_context(cafile=str(info.ca_path) if info.ca_path else None,
                                     cadata=_pem(info.ca_data).decode() if info.ca_data else None)
    if info.insecure:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if info.certificate_path and info.private_key_path:
        ctx.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    elif info.certificate_data and info.private_key_data:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(_pem(info.certificate_data))
            key.write_bytes(_pem(info.private_key_data))
            ctx.load_cert_chain(str(cert), str(key))
    return ctx


def auth_headers(info: Any) -> dict[str, str]:
    if info.token:
        return {"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
    if info.username and info.password:
        return {"Authorization": aiohttp.BasicAuth(info.username, info.password).encode()}
    return {}


def _connector(info: Any, limit: int) -> aiohttp.TCPConnector:
    """Idle connections are kept `KEEPALIVE_S` (aiohttp's default is 15 s), so bursts a few seconds
    apart reuse them instead of paying TLS handshakes again. Create it inside the running event loop."""
    return aiohttp.TCPConnector(ssl=ssl_context(info), limit=limit, keepalive_timeout=KEEPALIVE_S)


def api_session(info: Any) -> aiohttp.ClientSession:
    """The adapter's session to the API server of a kopf `ConnectionInfo`."""
    return aiohttp.ClientSession(base_url=info.server, headers=auth_headers(info), connector=_connector(info, 64),
                                 timeout=aiohttp.ClientTimeout(total=30))


def kopf_session(info: Any) -> aiohttp.ClientSession:
    """kopf's own session, on the same credentials and keep-alive; kopf's settings otherwise: no
    connection limit (each watch stream holds one) and its per-request timeouts."""
    return aiohttp.ClientSession(headers=auth_headers(info), proxy=info.proxy_url, trust_env=info.trust_env,
                                 connector=_connector(info, 0))


class Kube:
    """The calls the controller makes. `writes` counts every mutating request by verb."""

    def __init__(self, login: Callable[[], Any]) -> None:
        self.login = login
        self.writes: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._pods: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = api_session(self.login())
        return self._session

    async def close(self) -> None:
        for s in (self._session, self._pods):
            if s is not None:
                await s.close()
        self._session = self._pods = None

    @staticmethod
    def custom_path(plural: str, ns: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{plural}/{name}"

    @staticmethod
    def child_path(kind: str, ns: str, name: str = "") -> str:
        prefix, plural = RESOURCES[kind]
        return f"{prefix}/namespaces/{ns}/{plural}" + (f"/{name}" if name else "")

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                      params: dict[str, str] | None = None) -> Obj:
        raw = await self.send(method, path, body, content_type, params)
        return dict(fastjson.loads(raw)) if raw else {}

    async def send(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                   params: dict[str, str] | None = None) -> bytes:
        """The reply's body undecoded: callers that need only the outcome (a create, a delete) skip
        decoding the whole object the server echoes back."""
        if method != "GET":
            self.writes[method] += 1
            metrics.API_WRITES.labels(method, _kind(path)).inc()
        data = None if body is None else fastjson.encode(body)
        for attempt in range(2):
            s = await self.session()
            async with s.request(method, path, data=data, params=params,
                                 headers={"Content-Type": content_type}) as r:
                raw = await r.read()
                if r.status == 401 and attempt == 0:  # credentials rotated (projected tokens do): log in again
                    await self.close()
                    continue
                if r.status >= 400:
                    raise ApiError(r.status, raw.decode(errors="replace"))
                return raw
        raise AssertionError("unreachable")

    async def list_children(self, kind: str, namespaces: list[str]) -> list[Obj]:
        """Every `kind` object the operator manages, in `namespaces` (all when empty)."""
        prefix, plural = RESOURCES[kind]
        paths = [f"{prefix}/namespaces/{ns}/{plural}" for ns in namespaces] or [f"{prefix}/{plural}"]
        items: list[Obj] = []
        for path in paths:
            reply = await self.request("GET", path, params={"labelSelector": f"{LABEL_MANAGED_BY}={MANAGED_BY}"})
            items.extend(reply["items"])
        return items

    async def list_cluster(self, kind: str) -> list[Obj]:
        """Every object of a cluster-scoped `kind` (e.g. Node)."""
        return list((await self.request("GET", CLUSTER_RESOURCES[kind]))["items"])

    async def serves(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves `plural` in `group_version` (discovery; e.g. whether Kueue is installed)."""
        try:
            reply = await self.request("GET", f"/apis/{group_version}")
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in reply.get("resources") or [])

    async def create(self, obj: Obj) -> bool:
        """Create `obj`; False when it already exists (deterministic names make that safe)."""
        try:
            await self.send("POST", self.child_path(obj["kind"], obj["metadata"]["namespace"]), obj)
            return True
        except ApiError as e:
            if e.status == 409:
                return False
            raise

    async def get_child(self, kind: str, ns: str, name: str) -> Obj:
        return await self.request("GET", self.child_path(kind, ns, name))

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply of a child we own (its fields are ours; a conflict is taken)."""
        meta = obj["metadata"]
        path = self.child_path(obj["kind"], meta["namespace"], meta["name"])
        return await self.request("PATCH", path, obj, "application/apply-patch+yaml",
                                  params={"fieldManager": MANAGED_BY, "force": "true"})

    async def delete_child(self, ns: str, kind: str, name: str, uid: str, force: bool = False) -> None:
        """Delete one child, pinned by uid; `force` deletes at once (gracePeriodSeconds 0)."""
        body: Obj = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        if force:
            body["gracePeriodSeconds"] = 0
        try:
            await self.send("DELETE", self.child_path(kind, ns, name), body)
        except ApiError as e:
            if e.status not in (404, 409):  # gone already, or a different object by now
                raise

    async def patch_status(self, path: str, status: Obj, resource_version: str) -> Obj:
        """Merge-patch status, guarded by resourceVersion: a 409 means the pass saw stale data."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return await self.request("PATCH", f"{path}/status", body, "application/merge-patch+json")

    async def delete(self, path: str) -> None:
        try:
            await self.send("DELETE", path, {"propagationPolicy": "Background"})
        except ApiError as e:
            if e.status != 404:
                raise

    async def progress(self, ip: str, port: int, since: int, path: str = "/progress") -> ProgressDoc | None:
        """Rank 0's progress (history after `since`), or None when it does not answer usefully."""
        reply = await self.read_progress(ip, port, since, path)
        return reply if isinstance(reply, ProgressDoc) else None

    async def read_progress(self, ip: str, port: int, since: int,
                            path: str = "/progress") -> ProgressDoc | Misbehaved | None:
        """Rank 0's progress; `Misbehaved` when it answered what no honest endpoint does (a redirect,
        a compressed or oversized body, not a progress document); None when it did not answer (yet)."""
        body = await self.read_pod(ip, port, path, MAX_PROGRESS_BYTES, {"since": str(since)})
        return body if body is None or isinstance(body, Misbehaved) else judge_progress(body)

    async def read_metrics(self, ip: str, port: int, path: str = "/metrics") -> bytes | Misbehaved | None:
        """A server's Prometheus text, at most MAX_METRICS_BYTES (more is `Misbehaved`); None when it did
        not answer (yet). The caller parses only what it needs."""
        body = await self.read_pod(ip, port, path, MAX_METRICS_BYTES)
        if isinstance(body, bytes) and len(body) > MAX_METRICS_BYTES:
            return Misbehaved(f"answered more than {MAX_METRICS_BYTES} bytes of metrics")
        return body

    async def read_pod(self, ip: str, port: int, path: str, limit: int,
                       params: dict[str, str] | None = None) -> bytes | Misbehaved | None:
        """GET from a pod, trusting nothing: no redirects, no decompression, at most `limit` + 1 bytes
        read, a 2 s deadline, every error contained (None: no useful answer)."""
        if self._pods is None:
            self._pods = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POD_TIMEOUT_S),
                                               auto_decompress=False)
        try:
            async with self._pods.get(f"http://{ip}:{port}{path}", params=params, allow_redirects=False,
                                      headers={"Accept-Encoding": "identity"}) as r:
                if 300 <= r.status < 400:
                    return Misbehaved(f"answered a redirect (HTTP {r.status}); redirects are never followed")
                encoding = r.headers.get("Content-Encoding", "identity")
                if r.status == 200 and encoding != "identity":
                    return Misbehaved(f"answered a {encoding[:32]!r}-encoded body; only identity is read")
                if r.status != 200:
                    return None
                return await read_at_most(r.content, limit + 1)
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError):
            return None
