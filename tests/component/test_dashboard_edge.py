"""The dashboard's HTTP edge, served for real (`make dashboard`'s process) in front of local runs, with
sign-in on and a stand-in API server answering TokenReview and SubjectAccessReview over HTTP (through
the official client, as in a cluster): nothing but the health probe answers without a valid token (not
the page, not its code, not its websocket); with one, the page is served and shows what that token's
user may read; the reviews carry the user as the API server named it."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeforge_dashboard import launch
from test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, running, write_run

USERS = {"alice-token": {"username": "alice", "uid": "u-1", "groups": ["team-a", "system:authenticated"]},
         "bob-token": {"username": "bob", "uid": "u-2", "groups": ["system:authenticated"]}}


class FakeApi:
    """TokenReview: USERS; SubjectAccessReview: alice may do anything in namespace `local`, bob nothing."""

    def __init__(self) -> None:
        self.reviews: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.reviews.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                spec = body["spec"]
                if self.path.endswith("/tokenreviews"):
                    user = USERS.get(spec["token"])
                    status: dict[str, Any] = {"authenticated": bool(user), **({"user": user} if user else {})}
                else:
                    attrs = spec["resourceAttributes"]
                    status = {"allowed": spec["user"] == "alice" and attrs["namespace"] == "local"}
                out = json.dumps({**body, "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kubeconfig(self, path: Path) -> Path:
        server = f"http://127.0.0.1:{self.server.server_address[1]}"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "dashboard", "user": {"token": "dashboard-sa-token"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "dashboard"}}]}))
        return path


@pytest.fixture
def signed(tmp_path: Path) -> Iterator[tuple[str, FakeApi]]:
    api = FakeApi()
    runs = tmp_path / "runs"
    write_run(runs, "digits-0001", running(100))
    env = {"KUBEFORGE_DASHBOARD_SOURCE": "local", "KUBEFORGE_RUNS_DIR": str(runs), "KUBEFORGE_DASHBOARD_AUTH": "token",
           "KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))}
    dashboard = launch.start(tmp_path / "dashboard", env, port=0, timeout=180)
    yield dashboard.url, api
    launch.stop(tmp_path / "dashboard")
    api.server.shutdown()


def get(url: str, authorization: str | None = None) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()


def test_nothing_but_the_health_probe_answers_without_a_valid_token(signed: tuple[str, FakeApi]) -> None:
    url, api = signed
    code, headers, body = get(url + "/")
    assert code == 401 and headers.get("WWW-Authenticate", "").startswith('Basic realm="Kubeforge dashboard')
    assert b"kubectl create token" in body and b"<script" not in body
    for path in ("/training?ns=local&name=digits-0001", "/static/js/nothing.js", "/_stcore/host-config"):
        assert get(url + path)[0] == 401
        assert get(url + path, basic("wrong-token"))[0] == 401
        assert get(url + path, "Bearer wrong-token")[0] == 401
    assert get(url + "/_stcore/health")[0] == 200  # the kubelet's probes carry no token
    code, _, page = get(url + "/", basic("alice-token"))
    assert code == 200 and b"__kubeforgeChunkGuard" in page
    assert get(url + "/", "Bearer bob-token")[0] == 200  # signed in; what bob may read is another matter
    review = next(r for r in api.reviews if r["path"].endswith("/tokenreviews") and r["spec"]["token"] == "alice-token")
    assert review["kind"] == "TokenReview" and review["auth"] == "Bearer dashboard-sa-token"


def test_the_websocket_needs_the_token_too(signed: tuple[str, FakeApi]) -> None:
    import socket

    url, _ = signed
    host, port = url.removeprefix("http://").split(":")

    def upgrade(authorization: str | None) -> bytes:
        with socket.create_connection((host, int(port)), timeout=30) as s:
            extra = f"Authorization: {authorization}\r\n" if authorization else ""
            s.sendall((f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                       f"Sec-WebSocket-Protocol: streamlit\r\n{extra}\r\n").encode())
            return s.recv(200)

    assert upgrade(None).startswith(b"HTTP/1.1 403")
    assert upgrade(basic("wrong-token")).startswith(b"HTTP/1.1 403")
    assert upgrade(basic("alice-token")).startswith(b"HTTP/1.1 101")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_a_signed_in_browser_sees_what_its_user_may_read(signed: tuple[str, FakeApi]) -> None:
    from dashboard_world import TIMEOUT_MS, settled, visit
    from playwright.sync_api import expect, sync_playwright

    url, api = signed
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for user, shown in (("alice", "digits-0001"), ("bob", "No TrainingJobs or ServingJobs")):
            page = browser.new_page(http_credentials={"username": user, "password": f"{user}-token"})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            visit(page, url + "/")
            expect(page.get_by_text(f"Signed in as {user}")).to_be_visible()
            expect(page.get_by_text(shown).first).to_be_attached()
            settled(page)
            page.close()
        page = browser.new_page(http_credentials={"username": "bob", "password": "bob-token"})
        visit(page, f"{url}/training?ns=local&name=digits-0001")
        expect(page.get_by_text("forbidden: you (bob) may not get trainingjobs in namespace local")).to_be_visible()
        browser.close()
    asked = [(r["spec"]["user"], r["spec"]["groups"], r["spec"]["resourceAttributes"]["verb"])
             for r in api.reviews if r["path"].endswith("/subjectaccessreviews")]
    assert ("alice", ["team-a", "system:authenticated"], "list") in asked
