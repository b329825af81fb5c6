"""The ServingJob probe reading servers' /metrics for autoscaling, against real HTTP servers on
loopback addresses (one per pod IP, the same port) that answer well, redirect, send a gzip bomb, an
endless body, NaN, a negative or a foreign model's gauge, garbage, a 500, or nothing in time: only the
honest value counts, every misbehaving pod is named in one rate-limited Warning, and a silent or
failing one is left out without a word."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubeforge_api.servingjob import AutoscalingMetric
from kubeforge_operator.kube import Kube
from kubeforge_operator.plan import Obj, World
from kubeforge_operator.servingjob.context import Config
from kubeforge_operator.servingjob.kind import ServingJobKind

GAUGE = "kubeforge:num_requests_waiting"
Reply = tuple[int, dict[str, str], bytes]
BEHAVIOUR: dict[str, Reply | None] = {  # pod name -> its reply (None: answers after the client gave up)
    "good": (200, {}, f'# TYPE {GAUGE} gauge\n{GAUGE}{{model_name="chat"}} 3.0\n'.encode()),
    "redirect": (302, {"Location": "http://169.254.169.254/metrics"}, b""),
    "bomb": (200, {"Content-Encoding": "gzip"}, gzip.compress(b" " * 20_000_000)),
    "huge": (200, {}, b"# " + b"x" * 1_000_000 + b"\n"),
    "nan": (200, {}, f'{GAUGE}{{model_name="chat"}} NaN\n'.encode()),
    "negative": (200, {}, f'{GAUGE}{{model_name="chat"}} -4\n'.encode()),
    "foreign": (200, {}, f'{GAUGE}{{model_name="other"}} 1\n'.encode()),
    "garbage": (200, {}, b"\x00\xff<html>not metrics</html>"),
    "failing": (500, {}, b"oops"),
    "slow": None,
}
QUIET = {"failing", "slow"}


def serve(ip: str, port: int, reply: Reply | None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            code, headers, body = reply or (200, {}, f'{GAUGE}{{model_name="chat"}} 1\n'.encode())
            if reply is None:
                time.sleep(3)  # beyond the client's 2 s
            self.send_response(code)
            for k, v in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer((ip, port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture(scope="module")
def pods() -> Iterator[tuple[int, list[Obj]]]:
    """A server per pod on 127.0.0.2, .3, ... at one port; the pods as the watch shows them."""
    first = serve("127.0.0.2", 0, BEHAVIOUR["good"])
    port = int(first.server_address[1])
    servers = [first] + [serve(f"127.0.0.{i + 3}", port, r) for i, r in enumerate(list(BEHAVIOUR.values())[1:])]
    objs = [{"metadata": {"name": name}, "status": {"podIP": f"127.0.0.{i + 2}", "conditions": [
        {"type": "Ready", "status": "True"}]}} for i, name in enumerate(BEHAVIOUR)]
    try:
        yield port, objs
    finally:
        for s in servers:
            s.shutdown()


def world(objs: list[Obj]) -> World:
    job = {"metadata": {"name": "chat", "namespace": "ml", "uid": "u"}, "spec": {
        "model": {"uri": "pvc://m/x"},
        "autoscaling": {"maxReplicas": 3, "metric": "waitingRequests", "targetWaitingRequests": 1}}}
    not_ready = {"metadata": {"name": "starting"}, "status": {"podIP": "127.0.0.99", "conditions": []}}
    return World(job, {"Pod": [*objs, not_ready]}, frozenset(), datetime.now(UTC))


async def probe_twice(kind: ServingJobKind, w: World) -> tuple[object, object]:
    kube = Kube(lambda: None)
    try:
        first = await kind.probe(w, kube)
        second = await kind.probe(w, kube)
        return first, second
    finally:
        await kube.close()


def test_only_honest_gauges_count_and_misbehaving_servers_are_named_once(pods: tuple[int, list[Obj]]) -> None:
    port, objs = pods
    kind = ServingJobKind(Config("img", autoscaling_sync_seconds=0.001), lambda key: None)
    kind.server_port = port
    first, second = asyncio.run(probe_twice(kind, world(objs)))
    assert first.load == (3.0,) and second.load == (3.0,)  # type: ignore[attr-defined]
    warning = first.warning  # type: ignore[attr-defined]
    assert warning is not None and second.warning is None, warning  # type: ignore[attr-defined]
    assert f"pod {next(n for n in BEHAVIOUR if n not in QUIET | {'good'})} " in warning
    assert f"and {len(BEHAVIOUR) - len(QUIET) - 2} more" in warning


def test_each_kind_of_misbehaviour_is_said_in_words(pods: tuple[int, list[Obj]]) -> None:
    port, objs = pods
    kind = ServingJobKind(Config("img"), lambda key: None)
    kind.server_port = port
    servers = [(o["metadata"]["name"], o["status"]["podIP"]) for o in objs]

    async def read() -> tuple[tuple[float, ...], list[str]]:
        kube = Kube(lambda: None)
        try:
            return await kind.read_load(servers, AutoscalingMetric.WAITING_REQUESTS, "chat", kube)
        finally:
            await kube.close()

    values, problems = asyncio.run(read())
    assert values == (3.0,)
    named = {p.split()[1]: p for p in problems}
    assert set(named) == set(BEHAVIOUR) - QUIET - {"good"}, problems
    assert "redirect" in named["redirect"] and "gzip" in named["bomb"] and "more than" in named["huge"]
    assert "no server can" in named["nan"] and "no server can" in named["negative"]
    assert "does not report" in named["foreign"] and "UTF-8" in named["garbage"]
