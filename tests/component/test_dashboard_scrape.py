"""The dashboard against hostile inference-server pods, over real HTTP on loopback: a server pod runs
what its tenant put there, so a scrape follows no redirect (the target is never asked), echoes no
remote text on the page, abandons a body past its size cap and a server that trickles past its
deadline, and reads a bounded number of series. The same through the serving page (AppTest)."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dashboard_world as w
import pytest
from kubeforge_dashboard import metrics, servers
from kubeforge_dashboard.source import PodInfo
from test_dashboard_pages import exposition, render, seen

SECRET = "internal-token-5f1e"
Behaviour = Callable[[http.server.BaseHTTPRequestHandler], None]


def answer(code: int, body: bytes, **headers: str) -> Behaviour:
    def run(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
    return run


def endless(h: http.server.BaseHTTPRequestHandler) -> None:
    """200, no length, then 64 MiB of plausible metrics lines (the client should leave long before)."""
    h.send_response(200)
    h.end_headers()
    line = b'kubeforge_inference_requests_total{endpoint="infer",code="200"} 1\n' * 1024
    for _ in range(1024):
        h.wfile.write(line)


def trickle(headers_first: bool) -> Behaviour:
    """One byte every 0.2 s for a minute: of the body, or of the status line itself."""
    def run(h: http.server.BaseHTTPRequestHandler) -> None:
        if headers_first:
            h.send_response(200)
            h.end_headers()
        for _ in range(300):
            h.wfile.write(b"#" if headers_first else b"H")
            h.wfile.flush()
            time.sleep(0.2)
    return run


class Hostile:
    """A real HTTP server whose answer to every GET is `behaviour`; counts requests per path."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = answer(200, exposition())
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                with contextlib.suppress(OSError):  # the dashboard hung up, as it should
                    outer.behaviour(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pod(self) -> PodInfo:
        return PodInfo("ml", "digits-serving-7d9f-abcde", "Running", "kf-node", "127.0.0.1", True, port=self.port)


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.server.shutdown()


def scrape_error(server: Hostile, timeout: float = 1.0) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(servers.ServerError) as e:
        servers.scrape(server.pod(), timeout)
    return e.value.message, time.monotonic() - start


def test_a_redirect_is_not_followed(hostile: Hostile) -> None:
    target = Hostile()
    try:
        target.behaviour = answer(200, SECRET.encode())
        hostile.behaviour = answer(302, b"", Location=f"http://127.0.0.1:{target.port}/secret")
        message, _ = scrape_error(hostile)
        assert message.endswith("/metrics answered 302: redirects are not followed")
        assert target.hits == {}  # the dashboard never asked the redirect's target
    finally:
        target.server.shutdown()


def test_no_remote_text_is_echoed(hostile: Hostile) -> None:
    hostile.behaviour = answer(404, f"not here; {SECRET}".encode())
    message, _ = scrape_error(hostile)
    assert message.endswith("/metrics answered 404") and SECRET not in message
    hostile.behaviour = answer(200, f"{SECRET} {{\nmore".encode())  # the first line of a 200 body
    with pytest.raises(metrics.MetricsError) as e:
        metrics.parse(servers.scrape(hostile.pod()), 1.0)
    assert SECRET not in str(e.value)


def test_a_body_past_the_size_cap_is_abandoned(hostile: Hostile) -> None:
    hostile.behaviour = endless
    message, took = scrape_error(hostile, timeout=10.0)
    assert message.endswith(f"/metrics answered more than {servers.MAX_SCRAPE_BYTES // 1024} KiB: not read")
    assert took < 5.0  # it stopped reading at the cap, not at the deadline
    big = b"#" * (servers.MAX_SCRAPE_BYTES + 1)
    hostile.behaviour = answer(200, big)  # declared too long: not even read
    assert "not read" in scrape_error(hostile)[0]


@pytest.mark.parametrize("headers_first", [True, False])
def test_a_trickling_server_is_abandoned_at_the_deadline(hostile: Hostile, headers_first: bool) -> None:
    hostile.behaviour = trickle(headers_first)
    message, took = scrape_error(hostile, timeout=1.0)
    assert message.endswith("/metrics took longer than 1 s: abandoned")
    assert took < 4.0  # the deadline holds the whole exchange, not each read


def test_parsing_reads_a_bounded_number_of_series() -> None:
    lines = [f'kubeforge_inference_requests_total{{endpoint="e{i}",code="200"}} 1' for i in range(3000)]
    with pytest.raises(metrics.MetricsError, match="more than 2000 series"):
        metrics.parse("\n".join(lines), 1.0)
    noise = "\n".join(f"other_metric_{i} 1" for i in range(4000)) + "\n" + exposition().decode()
    assert metrics.parse(noise, 1.0).requests == 100  # other families are skipped, not parsed
    with pytest.raises(metrics.MetricsError, match="took longer than -1 s"):
        metrics.parse(exposition().decode(), 1.0, budget=-1.0)


def test_the_serving_page_shows_our_words_only(hostile: Hostile) -> None:
    target = Hostile()
    try:
        target.behaviour = answer(200, SECRET.encode())
        hostile.behaviour = answer(302, f"see {SECRET}".encode(), Location=f"http://127.0.0.1:{target.port}/")
        text = seen(render(w.world("127.0.0.1", hostile.port), "serving", ns="ml", name="digits-serving"))
        assert "Metrics of digits-serving-7d9f-abcde unreadable:" in text and "redirects are not followed" in text
        hostile.behaviour = answer(200, f"{SECRET} {{".encode())
        text += seen(render(w.world("127.0.0.1", hostile.port), "serving", ns="ml", name="digits-serving"))
        assert "not Prometheus text" in text
        assert SECRET not in text and target.hits == {}
    finally:
        target.server.shutdown()


def test_the_serving_page_refuses_token_metrics_no_count_can_have(hostile: Hostile) -> None:
    """A pod that claims NaN, infinite or absurd token counts, or a KV cache more than full: its metrics are
    unreadable, said in our words, and no language-model panel draws them."""
    for lines, why in ((b'kubeforge:generation_tokens_total{model_name="m"} NaN\n', "not a number"),
                       (b'kubeforge:prompt_tokens_total{model_name="m"} 1e300\n', "absurdly large"),
                       (b'kubeforge:kv_cache_usage_perc{model_name="m"} 3.5\n', "share above 1")):
        hostile.behaviour = answer(200, exposition() + lines)
        at = render(w.world("127.0.0.1", hostile.port), "serving", ns="ml", name="digits-serving")
        text = seen(at)
        assert "Metrics of digits-serving-7d9f-abcde unreadable: kubeforge:" in text and why in text
        assert "Language model" not in text and "1e300" not in text and "3.5" not in text
