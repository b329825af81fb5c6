"""The HTTP edge: a plain ASGI application that routes the Open Inference Protocol paths (with or
without a `/versions/{version}` segment) to the model service and turns `ServerError`s into
`{"error": "..."}` answers. It only translates, and reads request bodies within two bounds: the
per-request `max_request_bytes` (413) and the process-wide `BodyBudget` all bodies being read or
parsed share (503), so many slow or large uploads cannot exhaust memory.

Why plain ASGI and not a framework: the route table is seven fixed paths, and a framework's
request/response objects cost more than the whole no-op path (bench/serve: this app's no-op takes
1.5x (1.47-1.79x) fewer CPU-seconds per request than the same route in Starlette on the same
uvicorn with httptools and uvloop)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kubeforge_api.inference import HEADER_CONTENT_LENGTH, PATH_LIVE, PATH_METRICS, PATH_READY, PATH_SERVER, ErrorBody
from prometheus_client import Gauge

from .codec import JSON, Encoded
from .errors import MethodNotAllowed, NotFound, ServerError, TooLarge, Unavailable
from .llm.routes import PREFIX as OPENAI_PREFIX
from .llm.routes import ClientLeft, OpenAIRoutes
from .metrics import CONTENT_TYPE
from .service import ModelService

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("kubeforge_server")
MODELS_PREFIX = "/v2/models/"
VERSIONS = "versions/"
_FIXED = {PATH_LIVE: "live", PATH_READY: "ready", PATH_SERVER: "server_metadata", PATH_METRICS: "metrics"}
_MODEL_ACTIONS = {"": "model_metadata", "ready": "model_ready", "infer": "infer"}
_HEADER_LENGTH = HEADER_CONTENT_LENGTH.encode()


class ClientGone(Exception):
    """The connection ended (or timed out) before the body was complete: nobody to answer."""


class BodyBudget:
    """Request body bytes held by all requests of the process together (read, queued for parsing)."""

    def __init__(self, limit: int, gauge: Gauge) -> None:
        self.limit, self.used, self._gauge = limit, 0, gauge

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise Unavailable(f"the server already holds {self.used} bytes of request bodies "
                              f"({self.limit} at most: maxBufferedBytes); retry shortly")
        self.used += n
        self._gauge.set(self.used)

    def give(self, n: int) -> None:
        self.used -= n
        self._gauge.set(self.used)


class Reservation:
    """What one request holds of the budget: its declared length at once, else what has arrived."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget, self.held = budget, 0

    def grow(self, total: int) -> None:
        if total > self.held:
            self.budget.take(total - self.held)
            self.held = total

    def release(self) -> None:
        self.budget.give(self.held)
        self.held = 0


class App:
    def __init__(self, service: ModelService) -> None:
        self.service = service
        self._max_body = service.settings.max_request_bytes
        self.budget = BodyBudget(service.settings.max_buffered_bytes, service.metrics.body_bytes)
        self.openai = OpenAIRoutes(service.language_model, self._read_body, service.metrics.count)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.service.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path.startswith(OPENAI_PREFIX):
            await self.openai(scope, receive, send)
            return
        endpoint, name, version = _endpoint(path)
        try:
            status, answer = await self._handle(endpoint, name, version, method, scope, receive)
        except ClientGone:
            return
        except ServerError as e:
            status, answer = e.status, Encoded(ErrorBody(error=e.message).dump_json(), JSON, e.headers)
        except Exception as e:  # a fault of ours, not of the request: say so in one line
            log.exception("unexpected error")
            status, answer = 500, Encoded(ErrorBody(error=f"internal error: {type(e).__name__}").dump_json(), JSON)
        self.service.metrics.count(endpoint, status)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", answer.content_type),
                                (b"content-length", str(len(answer.body)).encode()), *answer.headers]})
        await send({"type": "http.response.body", "body": answer.body})

    async def _handle(self, endpoint: str, name: str, version: str | None, method: str, scope: Scope,
                      receive: Receive) -> tuple[int, Encoded]:
        svc = self.service
        if endpoint == "other":
            raise NotFound(f"no such endpoint: {method} {scope['path'][:200]}")
        if endpoint == "infer":
            _allow(method, "POST")
            return 200, await self._infer(name, version, scope, receive)
        _allow(method, "GET")
        if endpoint == "live":
            return 200, Encoded(b'{"live":true}', JSON)
        if endpoint == "ready":
            return _health(svc.ready, "server is not ready")
        if endpoint == "model_ready":
            svc.check_model(name, version)
            return _health(svc.ready, "model is not ready")
        if endpoint == "model_metadata":
            return 200, Encoded(svc.model_metadata(name, version).dump_json(), JSON)
        if endpoint == "server_metadata":
            return 200, Encoded(svc.server_metadata().dump_json(), JSON)
        return 200, Encoded(svc.metrics.render(), CONTENT_TYPE.encode())

    async def _infer(self, name: str, version: str | None, scope: Scope, receive: Receive) -> Encoded:
        self.service.check_model(name, version)  # before reading a body nobody will use
        reservation = Reservation(self.budget)
        try:
            body = await self._body(scope, receive, reservation)
            return await self.service.infer(name, version, body, _header(scope, _HEADER_LENGTH))
        finally:
            reservation.release()

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """A whole request body within the bounds (for the OpenAI-compatible routes)."""
        reservation = Reservation(self.budget)
        try:
            return await self._body(scope, receive, reservation)
        except ClientGone:
            raise ClientLeft from None
        finally:
            reservation.release()

    async def _body(self, scope: Scope, receive: Receive, reservation: Reservation) -> bytes:
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self._max_body:
                raise TooLarge(f"request body of {int(declared)} bytes exceeds {self._max_body} (maxRequestBytes)")
            reservation.grow(int(declared))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise TooLarge(f"request body exceeds {self._max_body} bytes (maxRequestBytes)")
            reservation.grow(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _endpoint(path: str) -> tuple[str, str, str | None]:
    """(endpoint label, model name, version or None) of a path; "other" for paths the protocol does not have."""
    if not path.startswith(MODELS_PREFIX):
        return _FIXED.get(path, "other"), "", None
    name, _, action = path[len(MODELS_PREFIX):].partition("/")
    version: str | None = None
    if action.startswith(VERSIONS):
        version, _, action = action[len(VERSIONS):].partition("/")
        if not version:
            return "other", name, None
    return _MODEL_ACTIONS.get(action, "other"), name, version


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"method {method} is not allowed here; use {allowed}")


def _health(ok: bool, why: str) -> tuple[int, Encoded]:
    if not ok:
        raise Unavailable(why)
    return 200, Encoded(b'{"ready":true}', JSON)
