"""Talking to the inference servers of a ServingJob, pod by pod: `/metrics` scrapes and Open
Inference Protocol calls (model metadata, infer) with the wire models of kubeforge_api.inference.
Servers are reached at their pod IP and container port (the dashboard has no `pods/proxy` right,
and a Service would hide which replica answered).

A server pod runs whatever its tenant put there, so every call is held to what the page needs: no
redirect is followed (a 3xx is an error: a redirect could point the dashboard at anything its
network reaches), an answer larger than the call's byte limit is abandoned, and the whole exchange
(connect, headers, body) has one deadline, enforced by closing the socket when it passes, so a
server that trickles bytes cannot hold a page. Failures raise `ServerError` with a one-line message
of our own words; the only remote text ever shown is an inference answer's typed `error` field
(the server's reply to the user's own request), cut to one short line. Plain `http.client` rather
than urllib: urllib follows redirects and has no deadline for a whole response."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from kubeforge_api.inference import (
    PATH_INFER,
    PATH_METRICS,
    PATH_MODEL,
    Datatype,
    ErrorBody,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestInput,
)
from kubeforge_api.server_settings import SERVER_PORT
from pydantic import ValidationError

from .source import PodInfo

MAX_BODY = 8 * 1024 * 1024  # an inference answer
MAX_SCRAPE_BYTES = 256 * 1024  # a server's /metrics is a few KiB
MAX_ERROR_BYTES = 16 * 1024
MAX_ERROR_TEXT = 200  # characters of a typed inference error shown
CHUNK = 64 * 1024


class ServerError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def address(pod: PodInfo) -> str:
    return f"http://{pod.ip}:{pod.port or SERVER_PORT}"


def _read_body(response: http.client.HTTPResponse, limit: int, url: str) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ServerError(f"{url} answered more than {limit // 1024} KiB: not read")
    data = bytearray()
    while chunk := response.read1(CHUNK):
        data += chunk
        if len(data) > limit:
            raise ServerError(f"{url} answered more than {limit // 1024} KiB: not read")
    return bytes(data)


def _error_text(status: int, body: bytes) -> str:
    """The typed error of an inference answer, on one short line; nothing for any other body."""
    try:
        text = " ".join(ErrorBody.model_validate_json(body).error.split())
    except ValidationError:
        return ""
    return ": " + (text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "...")


def _exchange(conn: http.client.HTTPConnection, path: str, body: bytes | None, limit: int,
              url: str) -> tuple[int, bytes]:
    conn.request("POST" if body is not None else "GET", path, body=body,
                 headers={"Content-Type": "application/json"} if body is not None else {})
    response = conn.getresponse()
    if 300 <= response.status < 400:
        raise ServerError(f"{url} answered {response.status}: redirects are not followed")
    if response.status >= 400:
        return response.status, _read_body(response, MAX_ERROR_BYTES, url)
    return response.status, _read_body(response, limit, url)


def _http(pod: PodInfo, path: str, body: bytes | None, timeout: float, limit: int = MAX_BODY) -> bytes:
    """The body of a 2xx answer to GET (or POST `body`) `path` on `pod`, within `timeout` seconds in all."""
    url = address(pod) + path
    if not pod.ip:
        raise ServerError(f"pod {pod.name} has no IP yet")
    expired = threading.Event()
    conn = http.client.HTTPConnection(pod.ip, pod.port or SERVER_PORT, timeout=timeout)
    try:
        conn.connect()
        sock = conn.sock

        def cut() -> None:  # the deadline: every read still waiting ends at once
            expired.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(timeout, cut)
        timer.daemon = True
        timer.start()
        try:
            status, data = _exchange(conn, path, body, limit, url)
        finally:
            timer.cancel()
        if expired.is_set():  # a body cut short reads as one that ended
            raise TimeoutError
    except (OSError, http.client.HTTPException, ValueError) as e:
        if expired.is_set():
            raise ServerError(f"{url} took longer than {timeout:g} s: abandoned") from e
        raise ServerError(f"cannot reach {url}: {type(e).__name__}") from e
    finally:
        conn.close()
    if status >= 400:
        raise ServerError(f"{url} answered {status}{_error_text(status, data)}")
    return data


def scrape(pod: PodInfo, timeout: float = 2.0) -> str:
    """One server's /metrics text: at most MAX_SCRAPE_BYTES, within `timeout` seconds in all."""
    return _http(pod, PATH_METRICS, None, timeout, MAX_SCRAPE_BYTES).decode("utf-8", "replace")


def scrape_all(pods: list[PodInfo], timeout: float = 2.0) -> list[tuple[PodInfo, str | ServerError]]:
    """Every pod's metrics text (or why not), in parallel so one slow replica costs one timeout."""
    def one(p: PodInfo) -> tuple[PodInfo, str | ServerError]:
        try:
            return p, scrape(p, timeout)
        except ServerError as e:
            return p, e

    if not pods:
        return []
    with ThreadPoolExecutor(max_workers=min(len(pods), 8)) as pool:
        return list(pool.map(one, pods))


def metadata(pod: PodInfo, model: str, timeout: float = 5.0) -> ModelMetadata:
    body = _http(pod, PATH_MODEL.format(name=model), None, timeout)
    try:
        return ModelMetadata.model_validate_json(body)
    except ValidationError as e:
        raise ServerError(f"unreadable model metadata from {pod.name}: {str(e).splitlines()[0]}") from e


def infer(pod: PodInfo, model: str, request: InferenceRequest, timeout: float = 10.0) -> InferenceResponse:
    body = _http(pod, PATH_INFER.format(name=model), request.dump_json(), timeout)
    try:
        return InferenceResponse.model_validate_json(body)
    except ValidationError as e:
        raise ServerError(f"unreadable inference response from {pod.name}: {str(e).splitlines()[0]}") from e


def parse_rows(text: str) -> list[list[float]]:
    """Rows of numbers, one row per line, separated by commas or spaces (or a JSON list of rows)."""
    text = text.strip()
    if not text:
        raise ValueError("enter at least one row of numbers")
    if text.startswith("["):
        data = json.loads(text)
        rows = data if data and isinstance(data[0], list) else [data]
    else:
        rows = [[float(v) for v in line.replace(",", " ").split()] for line in text.splitlines() if line.strip()]
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"every row needs the same number of values (got {sorted(widths)})")
    return [[float(v) for v in r] for r in rows]


def request_for(rows: list[list[float]], meta: ModelMetadata | None) -> InferenceRequest:
    """An FP32 request with the model's input name (from its metadata when known)."""
    name = meta.inputs[0].name if meta and meta.inputs else "input"
    return InferenceRequest(inputs=[RequestInput(name=name, shape=[len(rows), len(rows[0])], datatype=Datatype.FP32,
                                                 data=[v for r in rows for v in r])])


def default_input(meta: ModelMetadata | None) -> str:
    """One row of zeros as wide as the model's input (its shape without the batch dimension)."""
    width = 1
    if meta and meta.inputs:
        for d in meta.inputs[0].shape[1:]:
            width *= max(d, 1)
    return ", ".join(["0"] * width)


def answer_rows(response: InferenceResponse) -> list[dict[str, object]]:
    """Per output row: the predicted class (argmax) and its score, for [batch, classes] outputs."""
    out: list[dict[str, object]] = []
    for o in response.outputs:
        if len(o.shape) == 2 and o.shape[1] > 0:
            flat = [float(v) for v in o.data]
            for i in range(o.shape[0]):
                row = flat[i * o.shape[1]:(i + 1) * o.shape[1]]
                best = max(range(len(row)), key=row.__getitem__)
                out.append({"output": o.name, "row": i, "predicted class": best, "score": round(row[best], 4)})
    return out
