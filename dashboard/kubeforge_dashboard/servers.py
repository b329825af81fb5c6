"""Talking to the inference servers of a ServingJob, pod by pod: `/metrics` scrapes and Open
Inference Protocol calls (model metadata, infer) with the wire models of kubeforge_api.inference.
Servers are reached at their pod IP and container port (the dashboard has no `pods/proxy` right,
and a Service would hide which replica answered). Failures raise `ServerError` with a one-line
message for the page; a 4xx answer carries the server's own error text."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
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

MAX_BODY = 8 * 1024 * 1024


class ServerError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def address(pod: PodInfo) -> str:
    return f"http://{pod.ip}:{pod.port or SERVER_PORT}"


def _http(url: str, body: bytes | None, timeout: float) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data: bytes = r.read(MAX_BODY)
            return data
    except urllib.error.HTTPError as e:
        detail = e.read(64 * 1024)
        try:
            text = ErrorBody.model_validate_json(detail).error
        except ValidationError:
            text = detail.decode("utf-8", "replace")[:300]
        raise ServerError(f"{url} answered {e.code}: {text}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ServerError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from e


def scrape(pod: PodInfo, timeout: float = 2.0) -> str:
    if not pod.ip:
        raise ServerError(f"pod {pod.name} has no IP yet")
    return _http(address(pod) + PATH_METRICS, None, timeout).decode("utf-8", "replace")


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
    body = _http(address(pod) + PATH_MODEL.format(name=model), None, timeout)
    try:
        return ModelMetadata.model_validate_json(body)
    except ValidationError as e:
        raise ServerError(f"unreadable model metadata from {pod.name}: {str(e).splitlines()[0]}") from e


def infer(pod: PodInfo, model: str, request: InferenceRequest, timeout: float = 10.0) -> InferenceResponse:
    body = _http(address(pod) + PATH_INFER.format(name=model), request.dump_json(), timeout)
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
