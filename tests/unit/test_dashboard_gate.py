"""The dashboard's HTTP edge as ASGI middleware around a stand-in for Streamlit's routes: the chunk guard
goes into every HTML page (asked for uncompressed), and nothing else is touched."""

from __future__ import annotations

import asyncio
from typing import Any

from kubeforge_dashboard.browser import GUARD
from kubeforge_dashboard.gate import GuardInjection

PAGE = b"<!doctype html><html><head><title>Streamlit</title></head><body><div id=root></div></body></html>"


def call(middleware: Any, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[dict[str, Any], bytes]:
    """One GET through `middleware`: (response start, body)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or []}
    asyncio.run(middleware(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0], body


def streamlit(seen: list[Any]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["headers"])
        html = not scope["path"].startswith("/static/")
        body = PAGE if html else b"export default 1"
        kind = b"text/html; charset=utf-8" if html else b"application/javascript"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:]})
    return app


def test_every_page_carries_the_guard_before_any_code() -> None:
    seen: list[Any] = []
    gate = GuardInjection(streamlit(seen))
    for path in ("/", "/training"):
        start, body = call(gate, path, [(b"accept-encoding", b"gzip"), (b"host", b"x")])
        assert body == PAGE.replace(b"</head>", GUARD.encode() + b"</head>")
        assert dict(start["headers"])[b"content-length"] == str(len(body)).encode()
    assert seen[0] == [(b"host", b"x")]  # asked for uncompressed
    start, body = call(gate, "/static/js/Metric.js", [(b"accept-encoding", b"gzip")])
    assert body == b"export default 1" and seen[-1] == [(b"accept-encoding", b"gzip")]
