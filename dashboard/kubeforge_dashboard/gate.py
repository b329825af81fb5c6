"""The dashboard's HTTP edge: ASGI middleware in front of Streamlit's own routes (`serve.py` mounts
it with `st.App`), for what a Streamlit script cannot do because it runs only after the page and its
websocket are up.

`Authentication` (when users must sign in, kubeforge_dashboard.auth) answers every request but the
health probe with 401 unless it carries a Kubernetes bearer token the API server accepts: as
`Authorization: Bearer`, or as the password of HTTP Basic (the browser's own sign-in prompt, which it
then repeats on every request of the page, its code and its websocket). So nothing of the dashboard,
not even Streamlit's frontend, reaches someone without a valid token; the pages then show what that
token's user may read.

`GuardInjection` puts the chunk guard (kubeforge_dashboard.browser) into the page's HTML itself, so it
runs before any of Streamlit's lazily loaded code is fetched: a guard that were itself an element
would be lazily loaded code, and could fail to load like the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.middleware import Middleware

from .auth import Reviewer, token_of
from .browser import GUARD
from .settings import DashboardSettings, make_reviewer
from .source import SourceError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Streamlit's routes that never answer with the app's HTML page.
NOT_PAGES = ("/static/", "/_stcore/", "/media/", "/component/", "/app/static/", "/favicon")
HEAD_END = b"</head>"
OPEN_PATHS = frozenset({"/_stcore/health"})  # the kubelet's probes carry no token
REALM = 'Basic realm="Kubeforge dashboard: any user name, a Kubernetes bearer token as the password", charset="UTF-8"'
SIGN_IN = (b"Sign in with any user name and a Kubernetes bearer token as the password (for a ServiceAccount: "
           b"kubectl create token NAME -n NAMESPACE). You will see what that token may read.\n")


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


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    plain = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": [*plain, (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": body})


class Authentication:
    """Every request but OPEN_PATHS needs a valid Kubernetes bearer token (see the module docstring)."""

    def __init__(self, app: ASGIApp, reviewer: Callable[[], Reviewer]) -> None:
        self.app, self.reviewer = app, reviewer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        token = token_of(header)
        try:
            who = await asyncio.to_thread(self.reviewer().authenticate, token) if token else None
        except SourceError:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1011})
            else:
                await _answer(send, 503, b"Cannot check credentials now: the Kubernetes API does not answer.\n", [])
            return
        if who is not None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await _answer(send, 401, SIGN_IN, [(b"www-authenticate", REALM.encode())])


def middleware(settings: DashboardSettings | None = None) -> list[Middleware]:
    """The edge, outermost first: sign-in (when users must sign in), then the chunk guard."""
    settings = settings or DashboardSettings.from_env()
    guard = Middleware(GuardInjection)
    if not settings.sign_in():
        return [guard]
    return [Middleware(Authentication, reviewer=lambda: make_reviewer(settings)), guard]
