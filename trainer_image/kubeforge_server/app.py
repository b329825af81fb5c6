"""The HTTP edge: a plain ASGI application that routes the Open Inference Protocol paths to the
model service and turns `ServerError`s into `{"error": "..."}` answers. It only translates.

Why plain ASGI and not a framework: the route table is seven fixed paths, and a framework's
request/response objects cost more than the whole no-op path (bench/serve: this app's no-op takes
1.5x (1.47-1.79x) fewer CPU-seconds per request than the same route in Starlette on the same
uvicorn with httptools and uvloop)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kubeforge_api.inference import PATH_LIVE, PATH_METRICS, PATH_READY, PATH_SERVER, ErrorBody

from .errors import MethodNotAllowed, NotFound, ServerError, TooLarge, Unavailable
from .metrics import CONTENT_TYPE
from .service import ModelService

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("kubeforge_server")
JSON = b"application/json"
MODELS_PREFIX = "/v2/models/"
_FIXED = {PATH_LIVE: "live", PATH_READY: "ready", PATH_SERVER: "server_metadata", PATH_METRICS: "metrics"}
_MODEL_ACTIONS = {"": "model_metadata", "ready": "model_ready", "infer": "infer"}


class App:
    def __init__(self, service: ModelService) -> None:
        self.service = service
        self._max_body = service.settings.max_request_bytes

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
        endpoint, name = _endpoint(path)
        headers: tuple[tuple[bytes, bytes], ...] = ()
        try:
            status, body, ctype = await self._handle(endpoint, name, method, scope, receive)
        except ServerError as e:
            status, body, ctype, headers = e.status, ErrorBody(error=e.message).dump_json(), JSON, e.headers
        except Exception as e:  # a fault of ours, not of the request: say so in one line
            log.exception("unexpected error")
            status, body, ctype = 500, ErrorBody(error=f"internal error: {type(e).__name__}").dump_json(), JSON
        self.service.metrics.count(endpoint, status)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, endpoint: str, name: str, method: str, scope: Scope,
                      receive: Receive) -> tuple[int, bytes, bytes]:
        svc = self.service
        if endpoint == "other":
            raise NotFound(f"no such endpoint: {method} {scope['path'][:200]}")
        if endpoint == "infer":
            _allow(method, "POST")
            return 200, await svc.infer(name, await self._body(scope, receive)), JSON
        _allow(method, "GET")
        if endpoint == "live":
            return 200, b'{"live":true}', JSON
        if endpoint == "ready":
            return _health(svc.ready, "server is not ready")
        if endpoint == "model_ready":
            svc.check_model(name)
            return _health(svc.ready, "model is not ready")
        if endpoint == "model_metadata":
            return 200, svc.model_metadata(name).dump_json(), JSON
        if endpoint == "server_metadata":
            return 200, svc.server_metadata().dump_json(), JSON
        return 200, svc.metrics.render(), CONTENT_TYPE.encode()

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self._max_body:
                raise TooLarge(f"request body of {int(value)} bytes exceeds {self._max_body} (maxRequestBytes)")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise TooLarge(f"request body exceeds {self._max_body} bytes (maxRequestBytes)")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _endpoint(path: str) -> tuple[str, str]:
    """(endpoint label, model name) of a path; "other" for paths the protocol does not have."""
    if path.startswith(MODELS_PREFIX):
        name, _, action = path[len(MODELS_PREFIX):].partition("/")
        return _MODEL_ACTIONS.get(action, "other"), name
    return _FIXED.get(path, "other"), ""


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"method {method} is not allowed here; use {allowed}")


def _health(ok: bool, why: str) -> tuple[int, bytes, bytes]:
    if not ok:
        raise Unavailable(why)
    return 200, b'{"ready":true}', JSON
