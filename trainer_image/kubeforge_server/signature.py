"""What a model takes and returns, derived from its model card's architecture, and the strict
conversion of an inference request's tensor (JSON data, or the bytes of the binary tensor extension)
into a numpy array (datatype, shape, batch size and values checked; every violation is an
`InvalidInput`, never an exception from the model).

A causal language model (`gpt`) returns the logits of the last position by default ([N, vocab]):
what next-token use needs, and a bounded answer; every position ([N, T, vocab]) on request of the
server's configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from kubeforge_api.inference import PARAM_BINARY_DATA_SIZE, Datatype, InferenceRequest, RequestInput, TensorMetadata

from .errors import InvalidInput

INPUT_NAME = "input"
_NUMPY = {Datatype.FP32: np.float32, Datatype.INT64: np.int64}
WIRE_DTYPES = {datatype: np.dtype(t).newbyteorder("<") for datatype, t in _NUMPY.items()}  # binary data
LM_LOGITS_LAST = "last"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: Datatype
    shape: tuple[int, ...]  # -1: variable (the batch dimension always is)
    upper: int | None = None  # exclusive bound of integer values (token ids < vocabulary size)
    max_variable: int | None = None  # largest size of a variable non-batch dimension (sequence length)

    def metadata(self) -> TensorMetadata:
        return TensorMetadata(name=self.name, datatype=self.datatype, shape=list(self.shape))


@dataclass(frozen=True)
class Signature:
    input: TensorSpec
    output: TensorSpec
    last_position: bool = False  # the model returns [N, T, ...]; the server answers position T - 1 only

    def example(self, rows: int) -> np.ndarray:
        """A valid input of `rows` rows (zeros; variable dimensions at their largest), for warm-up."""
        dims = [rows] + [d if d > 0 else (self.input.max_variable or 1) for d in self.input.shape[1:]]
        return np.zeros(dims, dtype=_NUMPY[self.input.datatype])

    def output_elements(self, input_shape: tuple[int, ...]) -> int:
        """Elements of the output for an input of `input_shape`: each variable output dimension has
        the size of the input's dimension at the same place (the batch, then the sequence)."""
        return math.prod(d if d > 0 else input_shape[i] for i, d in enumerate(self.output.shape))


def signature_of(card: dict[str, Any], lm_logits: str = LM_LOGITS_LAST) -> Signature:
    """The tensors of a Kubeforge model card's architecture (mlp, cnn, gpt); `lm_logits` says which
    positions a language model returns ("last" or "all")."""
    arch = card.get("architecture", {})
    kind = arch.get("model")
    if kind == "mlp":
        features = int(arch["inputDim"])
    elif kind == "cnn":
        features = math.prod(int(d) for d in arch["imageShape"])
    elif kind == "gpt":
        vocab, seq = int(arch["vocab"]), int(arch["seqLen"])
        last = lm_logits == LM_LOGITS_LAST
        return Signature(TensorSpec(INPUT_NAME, Datatype.INT64, (-1, -1), upper=vocab, max_variable=seq),
                         TensorSpec("logits", Datatype.FP32, (-1, vocab) if last else (-1, -1, vocab)), last)
    else:
        raise ValueError(f"model card architecture {kind!r} has no known signature")
    return Signature(TensorSpec(INPUT_NAME, Datatype.FP32, (-1, features)),
                     TensorSpec("logits", Datatype.FP32, (-1, int(arch["numClasses"]))))


def decode(request: InferenceRequest, sig: Signature, max_batch: int, binary: bytes | None = None) -> np.ndarray:
    """The request's one input tensor as a numpy array of the signature's dtype and shape; `binary` is
    what followed the JSON header of a binary-extension request (None for a plain JSON request)."""
    spec = sig.input
    tensor = _the_input(request, sig)
    shape = tuple(tensor.shape)
    _check_shape(shape, spec, max_batch)
    size = _binary_size(tensor)
    if size is not None:
        if tensor.data is not None:
            raise InvalidInput(f"input {spec.name!r} has both data and parameters.{PARAM_BINARY_DATA_SIZE}")
        return _from_bytes(binary or b"", size, spec, shape)
    if binary:
        raise InvalidInput(f"the request carries {len(binary)} bytes after its JSON header, but no input "
                           f"names its parameters.{PARAM_BINARY_DATA_SIZE}")
    if tensor.data is None:
        raise InvalidInput(f"input {spec.name!r} has no data (nor parameters.{PARAM_BINARY_DATA_SIZE})")
    flat = _flatten(tensor.data)
    if len(flat) != math.prod(shape):
        raise InvalidInput(f"shape {list(shape)} needs {math.prod(shape)} elements; data has {len(flat)}")
    return _to_array(flat, spec).reshape(shape)


def _the_input(request: InferenceRequest, sig: Signature) -> RequestInput:
    spec = sig.input
    if len(request.inputs) != 1:
        raise InvalidInput(f"the model takes exactly one input tensor ({spec.name!r}); got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.name != spec.name:
        raise InvalidInput(f"unknown input {tensor.name[:64]!r}; the model takes {spec.name!r}")
    for out in request.outputs or ():
        if out.name != sig.output.name:
            raise InvalidInput(f"unknown output {out.name[:64]!r}; the model produces {sig.output.name!r}")
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input {spec.name!r} must have datatype {spec.datatype}, not {tensor.datatype}")
    return tensor


def _binary_size(tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get(PARAM_BINARY_DATA_SIZE)
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise InvalidInput(f"parameters.{PARAM_BINARY_DATA_SIZE} of input {tensor.name[:64]!r} must be a byte count")
    return size


def _from_bytes(binary: bytes, size: int, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    if len(binary) != size:
        raise InvalidInput(f"input {spec.name!r} names {PARAM_BINARY_DATA_SIZE} {size}, but {len(binary)} bytes "
                           "follow the JSON header")
    dtype = WIRE_DTYPES[spec.datatype]
    if size != math.prod(shape) * dtype.itemsize:
        raise InvalidInput(f"shape {list(shape)} of {spec.datatype} needs {math.prod(shape) * dtype.itemsize} "
                           f"bytes; {PARAM_BINARY_DATA_SIZE} is {size}")
    arr = np.frombuffer(binary, dtype=dtype).astype(_NUMPY[spec.datatype])  # a native, writable copy
    _check_values(arr, spec)
    return arr.reshape(shape)


def _check_shape(shape: tuple[int, ...], spec: TensorSpec, max_batch: int) -> None:
    if len(shape) != len(spec.shape):
        raise InvalidInput(f"input {spec.name!r} must have shape {list(spec.shape)}; got {list(shape)}")
    if not 1 <= shape[0] <= max_batch:
        raise InvalidInput(f"batch size {shape[0]} is outside 1..{max_batch} (maxBatchSize)")
    for got, want in zip(shape[1:], spec.shape[1:], strict=True):
        if want > 0 and got != want:
            raise InvalidInput(f"input {spec.name!r} must have shape {list(spec.shape)}; got {list(shape)}")
        if want < 0 and not 1 <= got <= (spec.max_variable or 1):
            raise InvalidInput(f"dimension {got} of input {spec.name!r} is outside 1..{spec.max_variable}")


def _flatten(data: list[Any]) -> list[Any]:
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    for row in data:
        if not isinstance(row, list):
            raise InvalidInput("nested tensor data mixes lists and scalars")
        flat.extend(_flatten(row))
    return flat


def _to_array(flat: list[Any], spec: TensorSpec) -> np.ndarray:
    if spec.datatype == Datatype.FP32:
        if not all(type(v) is float or type(v) is int for v in flat):
            raise InvalidInput(f"input {spec.name!r} (FP32) must hold only numbers")
        try:
            with np.errstate(over="ignore"):
                arr = np.array(flat, dtype=np.float32)
        except OverflowError:  # an integer beyond any float (10**400): not a finite FP32 number either
            arr = np.array([np.inf], dtype=np.float32)
    else:
        if not all(type(v) is int for v in flat):
            raise InvalidInput(f"input {spec.name!r} ({spec.datatype}) must hold only integers")
        try:
            arr = np.array(flat, dtype=_NUMPY[spec.datatype])
        except OverflowError:
            raise InvalidInput(f"input {spec.name!r} holds an integer outside {spec.datatype}") from None
    _check_values(arr, spec)
    return arr


def _check_values(arr: np.ndarray, spec: TensorSpec) -> None:
    if spec.datatype == Datatype.FP32:
        if not np.isfinite(arr).all():
            raise InvalidInput(f"input {spec.name!r} holds a value that is not a finite FP32 number")
    elif spec.upper is not None and arr.size and (arr.min() < 0 or arr.max() >= spec.upper):
        raise InvalidInput(f"input {spec.name!r} values must lie in 0..{spec.upper - 1}")
