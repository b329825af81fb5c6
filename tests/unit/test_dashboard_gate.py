"""The dashboard's HTTP edge as ASGI middleware around a stand-in for Streamlit's routes: the chunk guard
goes into every HTML page (asked for uncompressed), and nothing else is touched."""

from __future__ import annotations

import asyncio
import base64
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


def test_the_token_of_an_authorization_header() -> None:
    from kubeforge_dashboard.auth import token_of

    assert token_of("Bearer abc.def") == "abc.def" and token_of("bearer  abc ") == "abc"
    assert token_of("Basic " + base64.b64encode(b"anyone:abc:with:colons").decode()) == "abc:with:colons"
    for bad in (None, "", "Bearer", "Basic !!!", "Basic " + base64.b64encode(b"user-only").decode(), "Digest x"):
        assert token_of(bad) is None


def test_sign_in_is_on_inside_a_cluster_unless_turned_off(tmp_path: Any, monkeypatch: Any) -> None:
    from kubeforge_dashboard import settings as s

    token = tmp_path / "token"
    monkeypatch.setattr(s, "SERVICE_ACCOUNT_TOKEN", token)
    in_cluster = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert not s.DashboardSettings.from_env({}).sign_in(in_cluster)  # no ServiceAccount mounted
    token.write_text("x")
    assert s.DashboardSettings.from_env({}).sign_in(in_cluster) and not s.DashboardSettings.from_env({}).sign_in({})
    assert not s.DashboardSettings.from_env({"KUBEFORGE_DASHBOARD_AUTH": "none"}).sign_in(in_cluster)
    assert s.DashboardSettings.from_env({"KUBEFORGE_DASHBOARD_AUTH": "token"}).sign_in({})
    scoped = s.DashboardSettings.from_env({"KUBEFORGE_DASHBOARD_WATCH_NAMESPACES": "team-a, team-b"})
    assert scoped.watch_namespaces == ("team-a", "team-b")


def test_review_answers_are_remembered_for_a_while_only() -> None:
    from kubeforge_dashboard.auth import TtlCache

    now = [0.0]
    cache: TtlCache[int] = TtlCache(ttl=30, size=2, clock=lambda: now[0])
    calls: list[str] = []
    assert cache.get("a", lambda: calls.append("a") or 1) == 1 and cache.get("a", lambda: 2) == 1
    now[0] = 31
    assert cache.get("a", lambda: 3) == 3  # expired: asked again
    cache.get("b", lambda: 4)
    cache.get("c", lambda: 5)  # over its size: the oldest goes
    assert cache.get("a", lambda: 6) == 6


def test_a_namespaced_dashboard_reads_its_namespaces_one_by_one() -> None:
    import dashboard_world as w
    import pytest
    from kubeforge_dashboard.scope import ScopedSource
    from kubeforge_dashboard.source import SourceError

    src, _ = w.tenants()
    scoped = ScopedSource(src, ("ml", "team-b"))
    assert {j.metadata.name for j in scoped.training_jobs(()).items} >= {"b-secret", "digits-running"}
    assert src.calls["training_jobs"] == 2 and scoped.namespaces() == ["ml", "team-b"]
    only = ScopedSource(src, ("team-b",))
    assert [j.metadata.name for j in only.training_jobs(()).items] == ["b-secret"]
    assert {p.namespace for p in only.pods("", {})} <= {"team-b"}
    with pytest.raises(SourceError, match="namespace ml is not one the dashboard watches"):
        only.training_job("ml", "digits-running")
