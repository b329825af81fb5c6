"""Request bodies to model inputs and model outputs to response bodies, in both encodings of the Open
Inference Protocol: plain JSON, and the binary tensor extension (a JSON header of the length the
`Inference-Header-Content-Length` header gives, then raw little-endian tensor bytes). Pure functions
of bytes and arrays, so the service can run them off the event loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from kubeforge_api.inference import (
    HEADER_CONTENT_LENGTH,
    PARAM_BINARY_DATA,
    PARAM_BINARY_DATA_OUTPUT,
    PARAM_BINARY_DATA_SIZE,
    SERVED_VERSION,
    InferenceRequest,
    InferenceResponse,
    ResponseOutput,
)
from pydantic import ValidationError

from .errors import InvalidInput
from .signature import WIRE_DTYPES, Signature, TensorSpec, decode

JSON = b"application/json"
BINARY = b"application/octet-stream"
UNSUPPORTED_OUTPUT_PARAMETERS = ("classification",)  # the classification extension: not served
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Decoded:
    x: np.ndarray
    request_id: str | None
    binary_output: bool


@dataclass(frozen=True)
class Encoded:
    body: bytes
    content_type: bytes
    headers: Headers = ()


def parse(body: bytes, header_length: bytes | None, sig: Signature, max_batch: int, max_output: int) -> Decoded:
    """The model input of a request body; `header_length` is its Inference-Header-Content-Length."""
    head, binary = _split(body, header_length)
    try:
        request = InferenceRequest.model_validate_json(head)
    except ValidationError as e:
        raise InvalidInput(_one_line(e)) from None
    x = decode(request, sig, max_batch, binary)
    elements = sig.output_elements(x.shape)
    if elements > max_output:
        raise InvalidInput(f"the output {sig.output.name!r} would hold {elements} elements, more than "
                           f"{max_output} (maxOutputElements); send fewer rows or shorter sequences")
    return Decoded(x, request.id, _binary_output(request))


def encode(model_name: str, request_id: str | None, spec: TensorSpec, y: np.ndarray, binary: bool) -> Encoded:
    """The response body for the model's output `y`: its values as JSON, or as raw bytes after the JSON."""
    if not binary:
        out = ResponseOutput.model_construct(name=spec.name, shape=list(y.shape), datatype=spec.datatype,
                                             data=y.reshape(-1).tolist())
        return Encoded(_response(model_name, request_id, out).dump_json(), JSON)
    raw = np.ascontiguousarray(y, dtype=WIRE_DTYPES[spec.datatype]).tobytes()
    out = ResponseOutput.model_construct(name=spec.name, shape=list(y.shape), datatype=spec.datatype,
                                         parameters={PARAM_BINARY_DATA_SIZE: len(raw)})
    head = _response(model_name, request_id, out).model_dump_json(
        exclude_none=True, exclude={"outputs": {"__all__": {"data"}}}).encode()
    return Encoded(head + raw, BINARY, ((HEADER_CONTENT_LENGTH.encode(), str(len(head)).encode()),))


def _response(model_name: str, request_id: str | None, out: ResponseOutput) -> InferenceResponse:
    return InferenceResponse.model_construct(model_name=model_name, model_version=SERVED_VERSION, id=request_id,
                                             outputs=[out])


def _split(body: bytes, header_length: bytes | None) -> tuple[bytes, bytes | None]:
    """(JSON header, binary part) of a body; no binary part without the header."""
    if header_length is None:
        return body, None
    text = header_length.strip()
    if not text.isdigit() or not 0 < int(text) <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {text[:20].decode(errors='replace')!r} must be a "
                           f"byte count within the body's {len(body)} bytes")
    n = int(text)
    return body[:n], body[n:]


def _binary_output(request: InferenceRequest) -> bool:
    """Whether the output goes back as binary data: its own `binary_data` parameter decides, else the
    request's `binary_data_output`."""
    default = (request.parameters or {}).get(PARAM_BINARY_DATA_OUTPUT) is True
    for out in request.outputs or ():
        params = out.parameters or {}
        for name in UNSUPPORTED_OUTPUT_PARAMETERS:
            if name in params:
                raise InvalidInput(f"output parameter {name!r} is not supported; ask for the logits")
        if PARAM_BINARY_DATA in params:
            return params[PARAM_BINARY_DATA] is True
    return default


def _one_line(e: ValidationError) -> str:
    err = e.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"invalid request: {where}: {err['msg']}{more}"
