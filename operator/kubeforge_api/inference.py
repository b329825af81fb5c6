"""Open Inference Protocol (KServe v2) REST wire models, used by both ends: the inference server
parses requests and writes responses with them; tests, benchmarks and the dashboard build requests
and read responses with them.

Field names follow the protocol (snake_case `model_name`, `datatype`), so these models do not use the
camelCase base of the CRD models. Tensor `data` may be flat (row-major) or nested, as the protocol
allows; the server checks its elements against `datatype` and `shape`.

The binary tensor extension (as Triton and `tritonclient` speak it): a request whose
`Inference-Header-Content-Length` header is N carries this JSON document in its first N bytes and
raw little-endian tensor bytes after it, one run per input whose `parameters.binary_data_size` gives
its length (such an input has no `data`). An output asked for with `parameters.binary_data: true`
(or every output, with the request parameter `binary_data_output: true`) comes back the same way:
the response's header says how long its JSON part is, each binary output names its
`binary_data_size` and has no `data`.

BYTES tensors hold strings (text for a model that tokenizes, label names it answers): JSON strings
in `data`, or in binary data each element as a 4-byte little-endian length followed by its bytes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

MAX_TENSORS: Final = 16
MAX_RANK: Final = 8

# Paths of the protocol's REST endpoints (model name filled in with str.format).
PATH_LIVE: Final = "/v2/health/live"
PATH_READY: Final = "/v2/health/ready"
PATH_SERVER: Final = "/v2"
PATH_MODEL: Final = "/v2/models/{name}"
PATH_INFER: Final = "/v2/models/{name}/infer"
PATH_METRICS: Final = "/metrics"

SERVED_VERSION: Final = "1"  # a server serves one model version; model paths may name it (/versions/1/)

# The binary tensor extension.
HEADER_CONTENT_LENGTH: Final = "inference-header-content-length"  # HTTP header (lower case, as ASGI has it)
PARAM_BINARY_DATA_SIZE: Final = "binary_data_size"  # input/output parameter: bytes of this tensor's run
PARAM_BINARY_DATA: Final = "binary_data"  # requested-output parameter: return this output as bytes
PARAM_BINARY_DATA_OUTPUT: Final = "binary_data_output"  # request parameter: return every output as bytes
BYTES_LENGTH_PREFIX: Final = 4  # bytes of the little-endian length before each binary BYTES element

# Model metadata parameters (`GET /v2/models/{name}`).
PARAM_DIGEST: Final = "digest"  # the model directory's identity digest (a Kubeforge artifact's: its weights')
PARAM_FORMAT: Final = "format"  # kubeforge | hf-transformers | torch-export
PARAM_ARCHITECTURE: Final = "architecture"  # built-in architecture, transformers class, or torch.export
PARAM_TASK: Final = "task"  # tensors | text-classification | image-classification | causal-lm
PARAM_ALTERNATIVE_INPUTS: Final = "alternative_inputs"  # another input form, e.g. "image UINT8 [-1, 224, 224, 3]"
PARAM_MAX_TOKENS: Final = "max_tokens"  # a text model's tokens per input; longer text is truncated

Parameters = dict[str, str | int | float | bool]


class Datatype(StrEnum):
    """Tensor element types of the protocol."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    def dump_json(self) -> bytes:
        """The wire form, without unset optionals."""
        return self.model_dump_json(exclude_none=True).encode()


class RequestInput(Wire):
    name: str = Field(min_length=1, max_length=256, description="Input tensor name.")
    shape: list[int] = Field(max_length=MAX_RANK, description="Tensor shape; the first dimension is the batch.")
    datatype: Datatype = Field(description="Element type.")
    data: list[Any] | None = Field(default=None, description=(
        "Elements (numbers, booleans, or strings for BYTES), flat in row-major order or nested; absent when "
        "the tensor travels as binary data."))
    parameters: Parameters | None = Field(default=None, description=(
        "Per-input parameters: `binary_data_size` (binary tensor extension); others are ignored."))


class RequestOutput(Wire):
    name: str = Field(min_length=1, max_length=256, description="Requested output tensor name.")
    parameters: Parameters | None = Field(default=None, description=(
        "Per-output parameters: `binary_data` (binary tensor extension); others are ignored."))


class InferenceRequest(Wire):
    id: str | None = Field(default=None, max_length=256, description="Echoed in the response.")
    parameters: Parameters | None = Field(default=None, description=(
        "Request parameters: `binary_data_output` (binary tensor extension); others are ignored."))
    inputs: list[RequestInput] = Field(min_length=1, max_length=MAX_TENSORS, description="Input tensors.")
    outputs: list[RequestOutput] | None = Field(default=None, max_length=MAX_TENSORS,
                                                description="Outputs to return (default: all).")


class ResponseOutput(Wire):
    name: str = Field(description="Output tensor name.")
    shape: list[int] = Field(description="Tensor shape.")
    datatype: Datatype = Field(description="Element type.")
    data: list[Any] = Field(default_factory=list, description=(
        "Elements, flat in row-major order; absent (empty here) for a binary output."))
    parameters: Parameters | None = Field(default=None, description=(
        "`binary_data_size` for an output that travels as binary data."))


class InferenceResponse(Wire):
    model_name: str = Field(description="The model that answered.")
    model_version: str | None = Field(default=None, description="Its version, when it has one.")
    id: str | None = Field(default=None, description="The request's id.")
    outputs: list[ResponseOutput] = Field(description="Output tensors.")


class ErrorBody(Wire):
    error: str = Field(description="One line saying what was wrong.")


class TensorMetadata(Wire):
    name: str = Field(description="Tensor name.")
    datatype: Datatype = Field(description="Element type.")
    shape: list[int] = Field(description="Shape; -1 marks a variable dimension (the batch).")


class ServerMetadata(Wire):
    name: str = Field(description="Server name.")
    version: str = Field(description="Server version.")
    extensions: list[str] = Field(default_factory=list, description="Supported protocol extensions.")


class ModelMetadata(Wire):
    name: str = Field(description="Model name (the ServingJob's name).")
    versions: list[str] = Field(default_factory=list, description="Available versions.")
    platform: str = Field(description="Framework that runs the model.")
    inputs: list[TensorMetadata] = Field(description="Expected inputs.")
    outputs: list[TensorMetadata] = Field(description="Produced outputs.")
    parameters: Parameters | None = Field(default=None, description=(
        "Model facts: digest, format, architecture, task; alternative_inputs and max_tokens where they apply."))
