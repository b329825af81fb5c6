"""A small JSON client for the Kubernetes API (a kubeconfig's token or client certificate, and its CA),
with list-then-watch informers. The harness uses it instead of a generated client so raw objects stay plain dicts."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64decode
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body

    def json(self) -> Obj:
        try:
            return dict(json.loads(self.body))
        except ValueError:
            return {}


class NotFound(ApiError, LookupError):
    pass


def _pem(entry: Obj, key: str) -> str | None:
    """A kubeconfig's PEM for `key` (`certificate-authority`...): the file, or the inline `-data`."""
    if entry.get(f"{key}-data"):
        return b64decode(entry[f"{key}-data"]).decode()
    return Path(entry[key]).read_text() if entry.get(key) else None


class KubeClient:
    def __init__(self, server: str, token: str, ca: str, client_cert: tuple[str, str] | None = None) -> None:
        """`ca` is a file path; `client_cert` the PEM texts of a client certificate and its key."""
        self.server = server.rstrip("/")
        self.token = token
        # Set: every request fails as an unreachable server would (a node agent's partition or death).
        self.link_down = threading.Event()
        self.ctx = ssl.create_default_context(cafile=ca)
        if client_cert is not None:  # ssl loads a certificate only from files: they live for this call only
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
                cert.write_text(client_cert[0])
                key.write_text(client_cert[1])
                self.ctx.load_cert_chain(str(cert), str(key))

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> KubeClient:
        cfg = yaml.safe_load(Path(path).read_text())
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        if cluster.get("certificate-authority"):
            return cls(cluster["server"], user.get("token", ""), cluster["certificate-authority"], _client_cert(user))
        with tempfile.NamedTemporaryFile("w", suffix=".crt", delete=False) as ca:  # inline CA (kind's kubeconfig)
            ca.write(_pem(cluster, "certificate-authority") or "")
        try:
            return cls(cluster["server"], user.get("token", ""), ca.name, _client_cert(user))
        finally:
            Path(ca.name).unlink()

    def _open(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
              query: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        if self.link_down.is_set():
            raise ConnectionRefusedError(f"{self.server} is unreachable from here (link down)")
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        req = urllib.request.Request(url, data=data, method=method, headers={
            **auth, "Content-Type": content_type, "Accept": "application/json"})
        for attempt in range(30):
            try:
                return urllib.request.urlopen(req, context=self.ctx, timeout=timeout)
            except urllib.error.HTTPError as e:
                text = e.read().decode(errors="replace")
                if e.code == 429 and attempt < 29:  # honour Retry-After, as client-go does
                    time.sleep(float(e.headers.get("Retry-After") or 1))
                    continue
                raise (NotFound if e.code == 404 else ApiError)(e.code, text) from None

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                query: dict[str, Any] | None = None) -> Obj:
        with self._open(method, path, body, content_type, query) as resp:
            raw = resp.read()
        return dict(json.loads(raw)) if raw else {}

    def text(self, path: str, query: dict[str, Any] | None = None) -> str:
        with self._open("GET", path, query=query) as resp:
            return str(resp.read().decode(errors="replace"))

    def get(self, path: str) -> Obj:
        return self.request("GET", path)

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Obj, kind: str = "merge") -> Obj:
        return self.request("PATCH", path, body, f"application/{kind}-patch+json")

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.request("DELETE", path, body)

    def watch(self, path: str, resource_version: str, timeout: int = 300,
              opened: Callable[[Any], None] | None = None) -> Iterator[tuple[str, Obj]]:
        """Watch events; `opened` receives the open response (so another thread can `close_watch` it)."""
        query = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout)}
        with self._open("GET", path, query=query, timeout=timeout + 30) as resp:
            if opened is not None:
                opened(resp)
            for line in resp:
                if line.strip():
                    event = json.loads(line)
                    yield event["type"], event["object"]


def _client_cert(user: Obj) -> tuple[str, str] | None:
    cert, key = _pem(user, "client-certificate"), _pem(user, "client-key")
    return (cert, key) if cert and key else None


def close_watch(resp: Any) -> None:
    """End a watch from another thread: shut its socket down, so the blocked read returns and the
    API server sees the connection go (a watch left open holds up its graceful shutdown)."""
    raw = getattr(getattr(resp, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Informer:
    """Keeps `items` (by uid) in step with `path`, calling `on_event(type, obj)` for each change."""

    def __init__(self, client: KubeClient, path: str, on_event: Callable[[str, Obj], None]) -> None:
        self.client = client
        self.path = path
        self.on_event = on_event
        self.items: dict[str, Obj] = {}
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"informer{path}", daemon=True)
        self._watch: Any = None

    def start(self) -> Informer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        if self._watch is not None:
            close_watch(self._watch)

    def reconnect(self) -> None:
        """Drop the current watch: the informer lists and watches again (once its client can reach the
        server)."""
        if self._watch is not None:
            close_watch(self._watch)

    def _opened(self, resp: Any) -> None:
        self._watch = resp
        if self.stopped.is_set():
            close_watch(resp)

    def _loop(self) -> None:
        while not self.stopped.is_set():
            try:
                listing = self.client.get(self.path)
                rv = listing["metadata"]["resourceVersion"]
                fresh = {o["metadata"]["uid"]: o for o in listing["items"]}
                for uid, obj in list(self.items.items()):
                    if uid not in fresh:
                        self.items.pop(uid)
                        self.on_event("DELETED", obj)
                for uid, obj in fresh.items():
                    self.items[uid] = obj
                    self.on_event("ADDED", obj)
                self.synced.set()
                while not self.stopped.is_set():
                    for etype, obj in self.client.watch(self.path, rv, opened=self._opened):
                        if etype == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), json.dumps(obj))
                        rv = obj["metadata"]["resourceVersion"]
                        if etype == "BOOKMARK":
                            continue
                        uid = obj["metadata"]["uid"]
                        if etype == "DELETED":
                            self.items.pop(uid, None)
                        else:
                            self.items[uid] = obj
                        self.on_event(etype, obj)
            except (ApiError, OSError, ValueError, http.client.HTTPException):  # 410 Gone, a dropped connection
                if not self.stopped.is_set():
                    time.sleep(0.5)
            except Exception:
                log.exception("informer %s: handler failed; relisting", self.path)
                time.sleep(0.5)
