"""Request bodies to model inputs and model outputs to response bodies, in both encodings of the Open
Inference Protocol: plain JSON, and the binary tensor extension (a JSON header of the length the
`Inference-Header-Content-Length` header gives, then raw little-endian tensor bytes; a BYTES element
as a 4-byte length and its bytes). A response holds the outputs the request names, else every output
of the model, each as JSON or as binary data as the request asks. Pure functions of bytes and arrays,
so the service can run them off the event loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from kubeforge_api.inference import (
    HEADER_CONTENT_LENGTH,
    PARAM_BINARY_DATA,
    PARAM_BINARY_DATA_OUTPUT,
    PARAM_BINARY_DATA_SIZE,
    SERVED_VERSION,
    Datatype,
    InferenceRequest,
    InferenceResponse,
    ResponseOutput,
)
from pydantic import ValidationError

from .errors import InvalidInput
from .signature import LENGTH, WIRE_DTYPES, Inputs, Signature, decode

JSON = b"application/json"
BINARY = b"application/octet-stream"
UNSUPPORTED_OUTPUT_PARAMETERS = ("classification",)  # the classification extension: not served
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Decoded:
    x: Inputs
    request_id: str | None
    outputs: tuple[tuple[str, bool], ...]  # (name, as binary data) of each output to answer, in order


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
    outputs = _outputs(request, sig)
    names = [name for name, _ in outputs]
    elements = sig.output_elements({k: v.shape for k, v in x.items()}, names)
    if elements > max_output:
        what = f"output {names[0]!r}" if len(names) == 1 else "outputs"
        raise InvalidInput(f"the {what} would hold {elements} elements, more than "
                           f"{max_output} (maxOutputElements); send fewer rows or shorter sequences")
    return Decoded(x, request.id, outputs)


def encode(model_name: str, request_id: str | None, sig: Signature, y: Inputs,
           outputs: tuple[tuple[str, bool], ...]) -> Encoded:
    """The response body for the model's outputs `y`: each as JSON values or as raw bytes after the JSON."""
    specs = {t.name: t for t in sig.outputs}
    parts: list[ResponseOutput] = []
    raws: list[bytes] = []
    for name, binary in outputs:
        spec, value = specs[name], y[name]
        if not binary:
            data = [v.decode("utf-8", "replace") for v in value.reshape(-1)] if spec.datatype == Datatype.BYTES \
                else value.reshape(-1).tolist()
            parts.append(ResponseOutput.model_construct(name=name, shape=list(value.shape), datatype=spec.datatype,
                                                        data=data))
            continue
        raw = _raw(spec.datatype, value)
        raws.append(raw)
        parts.append(ResponseOutput.model_construct(name=name, shape=list(value.shape), datatype=spec.datatype,
                                                    parameters={PARAM_BINARY_DATA_SIZE: len(raw)}))
    response = _response(model_name, request_id, parts)
    if not raws:
        return Encoded(response.dump_json(), JSON)
    binaries = {i: {"data"} for i, (_, binary) in enumerate(outputs) if binary}
    head = response.model_dump_json(exclude_none=True, exclude={"outputs": binaries}).encode()
    return Encoded(head + b"".join(raws), BINARY, ((HEADER_CONTENT_LENGTH.encode(), str(len(head)).encode()),))


def _raw(datatype: Datatype, value: np.ndarray) -> bytes:
    if datatype == Datatype.BYTES:
        return b"".join(LENGTH.pack(len(v)) + v for v in value.reshape(-1))
    return np.ascontiguousarray(value, dtype=WIRE_DTYPES[datatype]).tobytes()


def _response(model_name: str, request_id: str | None, outputs: list[ResponseOutput]) -> InferenceResponse:
    return InferenceResponse.model_construct(model_name=model_name, model_version=SERVED_VERSION, id=request_id,
                                             outputs=outputs)


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


def _outputs(request: InferenceRequest, sig: Signature) -> tuple[tuple[str, bool], ...]:
    """(name, as binary data) of each output to answer: those the request names, else all. An output's
    own `binary_data` parameter decides, else the request's `binary_data_output`."""
    default = (request.parameters or {}).get(PARAM_BINARY_DATA_OUTPUT) is True
    if not request.outputs:
        return tuple((t.name, default) for t in sig.outputs)
    chosen: dict[str, bool] = {}
    for out in request.outputs:
        params = out.parameters or {}
        for name in UNSUPPORTED_OUTPUT_PARAMETERS:
            if name in params:
                raise InvalidInput(f"output parameter {name!r} is not supported; ask for the logits")
        chosen[out.name] = params[PARAM_BINARY_DATA] is True if PARAM_BINARY_DATA in params else default
    return tuple(chosen.items())


def _one_line(e: ValidationError) -> str:
    err = e.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"invalid request: {where}: {err['msg']}{more}"
