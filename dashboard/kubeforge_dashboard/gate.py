"""The dashboard's HTTP edge: ASGI middleware in front of Streamlit's own routes (`serve.py` mounts
it with `st.App`), for what a Streamlit script cannot do because it runs only after the page and its
websocket are up.

`GuardInjection` puts the chunk guard (kubeforge_dashboard.browser) into the page's HTML itself, so it
runs before any of Streamlit's lazily loaded code is fetched: a guard that were itself an element
would be lazily loaded code, and could fail to load like the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.middleware import Middleware

from .browser import GUARD

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Streamlit's routes that never answer with the app's HTML page.
NOT_PAGES = ("/static/", "/_stcore/", "/media/", "/component/", "/app/static/", "/favicon")
HEAD_END = b"</head>"


def _is_page_request(scope: Scope) -> bool:
    path = str(scope.get("path", ""))
    return scope["type"] == "http" and scope.get("method") == "GET" and not path.startswith(NOT_PAGES)


class GuardInjection:
    """Adds GUARD to every HTML page Streamlit answers (the app's index page, whatever its path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_page_request(scope):
            await self.app(scope, receive, send)
            return
        # a page is a few KiB: ask for it uncompressed, so it can be edited
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]}
        start: Message | None = None
        body = bytearray()

        async def edit(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                kind = dict(message.get("headers", [])).get(b"content-type", b"")
                if not kind.startswith(b"text/html"):
                    start = None
                    await send(message)
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            page = bytes(body).replace(HEAD_END, GUARD.encode() + HEAD_END, 1)
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
            await send({"type": "http.response.body", "body": page})

        await self.app(scope, receive, edit)


def middleware() -> list[Middleware]:
    """The edge, outermost first."""
    return [Middleware(GuardInjection)]
