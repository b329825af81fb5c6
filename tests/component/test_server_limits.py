"""What a slow or hostile client meets, against the real server process over raw sockets: oversized
headers get 431 while they are still arriving, slow headers and slow bodies get 408, an idle
connection is closed, connections beyond the limit get 503 at once, bodies beyond the process-wide
budget get 503; and, in process, large JSON bodies are parsed (and large answers encoded) off the
event loop. Every wait here ends on an event (an answer, a closed socket, a metric), with a generous
deadline, never on a sleep."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from kubeforge_api.inference import InferenceResponse
from kubeforge_api.server_settings import ServerEnv, ServerSettings
from kubeforge_server import codec
from kubeforge_server.__main__ import load_served
from kubeforge_server.metrics import Metrics
from kubeforge_server.service import ModelService
from kubeforge_server.signature import signature_of
from kubeforge_trainer.artifacts import load_model
from servehelp import DIGITS_MLP, Client, Server, infer_body, request, write_artifact

INFER = "/v2/models/digits/infer"
DEADLINE = 30.0  # seconds an expected answer may take on a busy machine
WIDE_MLP = {"model": "mlp", "inputDim": 256, "hidden": 4, "layers": 1, "numClasses": 10}


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("mlp") / "artifact", DIGITS_MLP)


@pytest.fixture(scope="module")
def server(mlp_dir: Path) -> Iterator[Server]:
    """Short read timeouts, three connections, a 64 KiB body budget (40 000-byte requests)."""
    s = Server(mlp_dir, env={ServerEnv.HEADER_TIMEOUT_SECONDS: "1", ServerEnv.BODY_TIMEOUT_SECONDS: "1",
                             ServerEnv.MAX_REQUEST_BYTES: "40000", ServerEnv.MAX_BUFFERED_BYTES: "65536"}).start()
    yield s
    assert s.stop() == 0


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The one response the server sends on `sock` (it waits for it, up to the deadline)."""
    r = http.client.HTTPResponse(sock)
    r.begin()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def metric(port: int, sample: str) -> float:
    text = request(port, "GET", "/metrics").body.decode()
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert m, f"{sample} not in metrics"
    return float(m.group(1))


def wait_metric(port: int, sample: str, value: float) -> None:
    deadline = time.monotonic() + DEADLINE
    while metric(port, sample) != value:
        assert time.monotonic() < deadline, f"{sample} never became {value}"


def rows(n: int, seed: int, width: int = 64) -> list[list[float]]:
    return np.random.default_rng(seed).random((n, width), dtype=np.float32).round(4).tolist()  # type: ignore[no-any-return]


def test_oversized_headers_get_431_while_they_arrive(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 60_000)
        sock.sendall(b"a" * 8_000)  # past 64 KiB, and the header has not even ended
        status, headers, body = answer(sock)
    assert status == 431 and headers["connection"] == "close"
    assert "maxHeaderBytes" in json.loads(body)["error"]
    many = {f"X-Pad-{i}": "b" * 1000 for i in range(80)}  # many headers count together
    assert request(server.port, "GET", "/v2/health/live", headers=many).status == 431
    fine = {f"X-Pad-{i}": "b" * 1000 for i in range(30)}
    assert request(server.port, "GET", "/v2/health/live", headers=fine).status == 200
    assert metric(server.port, 'kubeforge_inference_requests_total{code="431",endpoint="connection"}') >= 1


def test_a_request_the_parser_refuses_gets_a_json_400(server: Server) -> None:
    bad_header = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"
    bad_chunk = (b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\n{\"in\r\nzz\r\n")  # a chunk size that is not hexadecimal
    for raw in (bad_header, bad_chunk):
        with connect(server.port) as sock:
            sock.sendall(raw)
            status, headers, body = answer(sock)
        assert status == 400 and headers["content-type"] == "application/json"
        assert json.loads(body) == {"error": "malformed HTTP request"}


def test_slow_headers_get_408(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        status, _, body = answer(sock)
    assert status == 408 and "headerTimeoutSeconds" in json.loads(body)["error"]


def test_an_idle_connection_is_closed(server: Server) -> None:
    with connect(server.port) as sock:
        assert sock.recv(1) == b""  # closed by the server, with nothing to answer


def test_a_slow_body_gets_408_and_frees_its_bytes(server: Server) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n{\"inputs\"")
        status, headers, body = answer(sock)
    assert status == 408 and headers["connection"] == "close"
    assert "bodyTimeoutSeconds" in json.loads(body)["error"]
    wait_metric(server.port, "kubeforge_inference_body_bytes", 0)
    assert request(server.port, "POST", INFER, infer_body(rows(2, seed=1))).status == 200


def test_bodies_beyond_the_process_budget_get_503(server: Server) -> None:
    full = infer_body(rows(2, seed=2))
    full += b" " * (39_000 - len(full))
    head = b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 39000\r\n\r\n"
    with connect(server.port) as slow:
        slow.sendall(head + full[:100])  # holds 39 000 of the 65 536 budget bytes while its body arrives
        wait_metric(server.port, "kubeforge_inference_body_bytes", 39_000)
        refused = request(server.port, "POST", INFER, full)
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        assert "maxBufferedBytes" in refused.json()["error"]
        slow.sendall(full[100:])
        status, _, _ = answer(slow)
    assert status == 200
    wait_metric(server.port, "kubeforge_inference_body_bytes", 0)
    assert request(server.port, "POST", INFER, full).status == 200


def test_connections_beyond_the_limit_get_503_at_once(mlp_dir: Path) -> None:
    s = Server(mlp_dir, env={ServerEnv.MAX_CONNECTIONS: "3", ServerEnv.HEADER_TIMEOUT_SECONDS: "600"}).start()
    held: list[Client] = []
    try:
        while len(held) < 3:  # three kept-alive connections the server has answered on
            client = Client(s.port)
            if client.call("GET", "/v2/health/live").status == 200:
                held.append(client)
            else:  # a probe connection of the start-up still counted: try again
                client.close()
        with connect(s.port) as extra:  # no request needed: answered and closed on accept
            status, headers, body = answer(extra)
        assert status == 503 and headers["retry-after"] == "1" and "maxConnections" in json.loads(body)["error"]
        held.pop().close()
        deadline = time.monotonic() + DEADLINE
        while request(s.port, "GET", "/v2/health/live").status != 200:  # until the server saw the close
            assert time.monotonic() < deadline
    finally:
        for client in held:
            client.close()
        assert s.stop() == 0


def test_large_json_is_parsed_and_encoded_off_the_event_loop(tmp_path: Path) -> None:
    """The event loop's thread spends far less CPU time on a large request than parsing its body
    takes: the parse and the encoding of the large answer run on the codec thread. (CPU time of the
    loop's thread, not wall time: a busy machine or a wait for the GIL does not count.)"""
    model_dir = write_artifact(tmp_path / "wide", WIDE_MLP)
    body = infer_body(rows(4096, seed=3, width=256))
    sig = signature_of(load_model(model_dir)[0])
    parse_cpu = min(_cpu(lambda: codec.parse(body, None, sig, 4096, 1 << 30)) for _ in range(2))
    settings = ServerSettings(model_dir=str(model_dir), model_name="wide", max_batch_size=4096,
                              max_request_bytes=64 << 20, max_buffered_bytes=64 << 20)
    failures: list[str] = []

    async def scenario() -> tuple[bytes, float]:
        service = ModelService(settings, load_served, Metrics(), lambda code, why: failures.append(why))
        service.start()
        while not service.ready:
            assert not failures, failures
            await asyncio.sleep(0.01)
        try:
            t0 = time.thread_time()
            answer = await service.infer("wide", None, body, None)
            return answer.body, time.thread_time() - t0
        finally:
            await service.stop()

    answer, loop_cpu = asyncio.run(scenario())
    assert InferenceResponse.model_validate_json(answer).outputs[0].shape == [4096, 10]
    assert loop_cpu < parse_cpu / 4, f"the event loop worked {loop_cpu:.3f} s; a parse takes {parse_cpu:.3f} s"


def _cpu(fn: Callable[[], object]) -> float:
    t0 = time.thread_time()
    fn()
    return time.thread_time() - t0
