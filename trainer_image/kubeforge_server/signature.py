"""What a served model takes and returns, derived from the loaded model's description
(`kubeforge_trainer.formats.Loaded`), and the strict conversion of an inference request's tensors
(JSON data, or the bytes of the binary tensor extension) into numpy arrays, one per input (datatype,
shape, batch size and values checked; every violation is an `InvalidInput`, never an exception from
the model).

A request names exactly the inputs of one of the model's input forms: its own inputs, or for an
image classifier with an image processor, `image` (UINT8 [N, H, W, C], normalised in the server)
instead of `pixel_values`. BYTES tensors hold strings: JSON strings, or in binary each element as a
4-byte little-endian length and its bytes; text inputs must be non-empty UTF-8.

A causal language model returns the logits of the last position by default ([N, vocab]): what
next-token use needs, and a bounded answer; every position ([N, T, vocab]) on request of the
server's configuration, for models that take token ids (a text model's positions depend on its
tokenizer: it always answers the last)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from kubeforge_api.inference import PARAM_BINARY_DATA_SIZE, Datatype, InferenceRequest, RequestInput, TensorMetadata
from kubeforge_trainer.formats import Loaded, Task, Tensor
from kubeforge_trainer.formats.kubeforge import describe

from .errors import InvalidInput

INPUT_NAME = "input"
IMAGE_INPUT = "image"
_NUMPY: dict[Datatype, type[Any]] = {
    Datatype.BOOL: np.bool_, Datatype.UINT8: np.uint8, Datatype.UINT16: np.uint16, Datatype.UINT32: np.uint32,
    Datatype.UINT64: np.uint64, Datatype.INT8: np.int8, Datatype.INT16: np.int16, Datatype.INT32: np.int32,
    Datatype.INT64: np.int64, Datatype.FP16: np.float16, Datatype.FP32: np.float32, Datatype.FP64: np.float64,
    Datatype.BYTES: np.object_,
}
WIRE_DTYPES = {datatype: np.dtype(t).newbyteorder("<") for datatype, t in _NUMPY.items() if t is not np.object_}
LM_LOGITS_LAST = "last"
Inputs = dict[str, np.ndarray]
LENGTH = struct.Struct("<I")  # the length prefix of a BYTES element in binary data (BYTES_LENGTH_PREFIX bytes)


def metadata(t: Tensor) -> TensorMetadata:
    return TensorMetadata(name=t.name, datatype=t.datatype, shape=list(t.shape))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]  # as served
    alternatives: tuple[tuple[Tensor, ...], ...] = ()  # other input forms a request may use instead
    last_position: bool = False  # the model returns [N, T, ...]; the server answers position T - 1 only
    max_rows: int | None = None  # the model's own batch bound, if it has one

    @property
    def input(self) -> Tensor:
        return self.inputs[0]

    @property
    def output(self) -> Tensor:
        return self.outputs[0]

    def forms(self) -> tuple[tuple[Tensor, ...], ...]:
        return (self.inputs, *self.alternatives)

    def example(self, rows: int) -> Inputs:
        """A valid input of `rows` rows, for warm-up."""
        out: Inputs = {}
        for t in self.inputs:
            if t.datatype == Datatype.BYTES:
                out[t.name] = np.array([b"warm up"] * rows, dtype=object).reshape((rows, *t.shape[1:]))
                continue
            dims = t.example[1:] if t.example else [d if d > 0 else (t.max_variable or 1) for d in t.shape[1:]]
            out[t.name] = np.zeros([rows, *dims], dtype=_NUMPY[t.datatype])
        return out

    def output_elements(self, shapes: dict[str, tuple[int, ...]], names: list[str]) -> int:
        """Elements of the named outputs for inputs of these shapes: the batch dimension has the
        requests's rows; another variable dimension the size of the input dimension it comes from (1
        where only running the model tells)."""
        rows = next(iter(shapes.values()))[0]
        total = 0
        for t in self.outputs:
            if t.name in names:
                total += math.prod(_size(t, i, d, rows, shapes) for i, d in enumerate(t.shape))
        return total


def _size(t: Tensor, i: int, d: int, rows: int, shapes: dict[str, tuple[int, ...]]) -> int:
    if d >= 0:
        return d
    if i == 0:
        return rows
    origin = t.sizes_from[i] if i < len(t.sizes_from) else None
    if origin is None or origin[0] not in shapes or origin[1] >= len(shapes[origin[0]]):
        return 1
    return shapes[origin[0]][origin[1]]


def signature_for(loaded: Loaded, lm_logits: str = LM_LOGITS_LAST) -> Signature:
    """What the server takes and answers for a loaded model."""
    rows = [t.max_rows for t in loaded.inputs if t.max_rows is not None]
    rows += [t.shape[0] for t in loaded.inputs if t.shape and t.shape[0] > 0]
    max_rows = min(rows) if rows else None
    if loaded.task == Task.CAUSAL_LM:
        logits = loaded.outputs[0]
        last = lm_logits == LM_LOGITS_LAST or loaded.tokenizer is not None
        if last:
            logits = replace(logits, shape=(logits.shape[0], logits.shape[-1]), sizes_from=(logits.sizes_from[0], None))
        return Signature(loaded.inputs, (logits,), last_position=last, max_rows=max_rows)
    alternatives: tuple[tuple[Tensor, ...], ...] = ()
    if loaded.task == Task.IMAGE_CLASSIFICATION and loaded.image is not None:
        image, channels = loaded.image, loaded.inputs[0].shape[1]
        alternatives = ((Tensor(IMAGE_INPUT, Datatype.UINT8, (-1, image.height, image.width, channels)),),)
    return Signature(loaded.inputs, loaded.outputs, alternatives, max_rows=max_rows)


def signature_of(card: dict[str, Any], lm_logits: str = LM_LOGITS_LAST) -> Signature:
    """The tensors of a Kubeforge model card's architecture (mlp, cnn, gpt)."""
    return signature_for(describe(card, torch.nn.Module()), lm_logits)


def decode(request: InferenceRequest, sig: Signature, max_batch: int, binary: bytes | None = None) -> Inputs:
    """The request's input tensors as numpy arrays of the signature's dtypes and shapes; `binary` is
    what followed the JSON header of a binary-extension request (None for a plain JSON request): each
    binary input's bytes in the order of the inputs."""
    form = _form(request, sig)
    _check_outputs(request, sig)
    limit = max_batch if sig.max_rows is None else min(max_batch, sig.max_rows)
    sizes = []
    for tensor in request.inputs:
        _check_shape(tuple(tensor.shape), form[tensor.name], limit)
        sizes.append(_binary_size(tensor))
    if len({t.shape[0] for t in request.inputs}) > 1:
        raise InvalidInput("the inputs have different numbers of rows")
    _check_binary_total(binary or b"", sizes)
    out: Inputs = {}
    offset = 0
    for tensor, size in zip(request.inputs, sizes, strict=True):
        spec, shape = form[tensor.name], tuple(tensor.shape)
        if size is None:
            out[spec.name] = _from_json(tensor, spec, shape)
            continue
        if tensor.data is not None:
            raise InvalidInput(f"input {spec.name!r} has both data and parameters.{PARAM_BINARY_DATA_SIZE}")
        out[spec.name] = _from_bytes((binary or b"")[offset:offset + size], size, spec, shape)
        offset += size
    return out


def _check_binary_total(binary: bytes, sizes: list[int | None]) -> None:
    declared = [s for s in sizes if s is not None]
    if not declared and binary:
        raise InvalidInput(f"the request carries {len(binary)} bytes after its JSON header, but no input "
                           f"names its parameters.{PARAM_BINARY_DATA_SIZE}")
    if declared and sum(declared) != len(binary):
        raise InvalidInput(f"the inputs name {PARAM_BINARY_DATA_SIZE} {sum(declared)} in all, but {len(binary)} "
                           "bytes follow the JSON header")


def _form(request: InferenceRequest, sig: Signature) -> dict[str, Tensor]:
    """The input form whose names the request's inputs are, each name once; its datatypes checked."""
    names = [t.name for t in request.inputs]
    known = {t.name: t for form in sig.forms() for t in form}
    for name in names:
        if name not in known:
            raise InvalidInput(f"unknown input {name[:64]!r}; the model takes {_expected(sig)}")
    form = next((f for f in sig.forms() if sorted(t.name for t in f) == sorted(names)), None)
    if form is None or len(set(names)) != len(names):
        raise InvalidInput(f"the model takes exactly {_expected(sig)}; got {', '.join(repr(n[:64]) for n in names)}")
    specs = {t.name: t for t in form}
    for tensor in request.inputs:
        if tensor.datatype != specs[tensor.name].datatype:
            raise InvalidInput(f"input {tensor.name!r} must have datatype {specs[tensor.name].datatype}, "
                               f"not {tensor.datatype}")
    return specs


def _expected(sig: Signature) -> str:
    return " or ".join(" and ".join(repr(t.name) for t in form) for form in sig.forms())


def _check_outputs(request: InferenceRequest, sig: Signature) -> None:
    names = {t.name for t in sig.outputs}
    for out in request.outputs or ():
        if out.name not in names:
            raise InvalidInput(f"unknown output {out.name[:64]!r}; the model produces "
                               f"{', '.join(repr(n) for n in sorted(names))}")


def _binary_size(tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get(PARAM_BINARY_DATA_SIZE)
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise InvalidInput(f"parameters.{PARAM_BINARY_DATA_SIZE} of input {tensor.name[:64]!r} must be a byte count")
    return size


def _from_bytes(binary: bytes, size: int, spec: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    if spec.datatype == Datatype.BYTES:
        return _strings(_split_bytes(binary, math.prod(shape), spec), spec).reshape(shape)
    dtype = WIRE_DTYPES[spec.datatype]
    if size != math.prod(shape) * dtype.itemsize:
        raise InvalidInput(f"shape {list(shape)} of {spec.datatype} needs {math.prod(shape) * dtype.itemsize} "
                           f"bytes; {PARAM_BINARY_DATA_SIZE} is {size}")
    arr = np.frombuffer(binary, dtype=dtype).astype(_NUMPY[spec.datatype])  # a native, writable copy
    _check_values(arr, spec)
    return arr.reshape(shape)


def _split_bytes(binary: bytes, count: int, spec: Tensor) -> list[bytes]:
    """The elements of binary BYTES data: each a 4-byte little-endian length, then that many bytes."""
    items: list[bytes] = []
    at = 0
    while at < len(binary) and len(items) < count:
        if at + LENGTH.size > len(binary):
            break
        (n,) = LENGTH.unpack_from(binary, at)
        at += LENGTH.size
        if at + n > len(binary):
            break
        items.append(binary[at:at + n])
        at += n
    if len(items) != count or at != len(binary):
        raise InvalidInput(f"the binary data of input {spec.name!r} is not {count} length-prefixed BYTES elements")
    return items


def _from_json(tensor: RequestInput, spec: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    if tensor.data is None:
        raise InvalidInput(f"input {spec.name!r} has no data (nor parameters.{PARAM_BINARY_DATA_SIZE})")
    flat = _flatten(tensor.data)
    if len(flat) != math.prod(shape):
        raise InvalidInput(f"shape {list(shape)} needs {math.prod(shape)} elements; data has {len(flat)}")
    if spec.datatype == Datatype.BYTES:
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(f"input {spec.name!r} (BYTES) must hold only strings")
        return _strings([v.encode("utf-8", "surrogatepass") for v in flat], spec).reshape(shape)
    return _to_array(flat, spec).reshape(shape)


def _strings(items: list[bytes], spec: Tensor) -> np.ndarray:
    """BYTES elements as an object array; text must be non-empty UTF-8 (what a tokenizer reads)."""
    for item in items:
        if not item:
            raise InvalidInput(f"input {spec.name!r} holds an empty string")
        try:
            item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input {spec.name!r} holds a string that is not UTF-8") from None
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _check_shape(shape: tuple[int, ...], spec: Tensor, max_batch: int) -> None:
    if len(shape) != len(spec.shape):
        raise InvalidInput(f"input {spec.name!r} must have shape {list(spec.shape)}; got {list(shape)}")
    if spec.shape[0] > 0 and shape[0] != spec.shape[0]:
        raise InvalidInput(f"batch size {shape[0]} is not the model's fixed batch size {spec.shape[0]}")
    if not 1 <= shape[0] <= max_batch:
        raise InvalidInput(f"batch size {shape[0]} is outside 1..{max_batch} (maxBatchSize)")
    for got, want in zip(shape[1:], spec.shape[1:], strict=True):
        if want > 0 and got != want:
            raise InvalidInput(f"input {spec.name!r} must have shape {list(spec.shape)}; got {list(shape)}")
        if want < 0 and not 1 <= got <= (spec.max_variable or 2**31):
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


def _to_array(flat: list[Any], spec: Tensor) -> np.ndarray:
    if spec.datatype in (Datatype.FP32, Datatype.FP16, Datatype.FP64):
        if not all(type(v) is float or type(v) is int for v in flat):
            raise InvalidInput(f"input {spec.name!r} ({spec.datatype}) must hold only numbers")
        try:
            with np.errstate(over="ignore"):
                arr = np.array(flat, dtype=_NUMPY[spec.datatype])
        except OverflowError:  # an integer beyond any float (10**400): not a finite number either
            arr = np.array([np.inf], dtype=_NUMPY[spec.datatype])
    elif spec.datatype == Datatype.BOOL:
        if not all(type(v) is bool for v in flat):
            raise InvalidInput(f"input {spec.name!r} (BOOL) must hold only true or false")
        arr = np.array(flat, dtype=np.bool_)
    else:
        if not all(type(v) is int for v in flat):
            raise InvalidInput(f"input {spec.name!r} ({spec.datatype}) must hold only integers")
        try:
            arr = np.array(flat, dtype=_NUMPY[spec.datatype])
        except OverflowError:
            raise InvalidInput(f"input {spec.name!r} holds an integer outside {spec.datatype}") from None
    _check_values(arr, spec)
    return arr


def _check_values(arr: np.ndarray, spec: Tensor) -> None:
    if spec.datatype in (Datatype.FP32, Datatype.FP16, Datatype.FP64):
        if not np.isfinite(arr).all():
            raise InvalidInput(f"input {spec.name!r} holds a value that is not a finite {spec.datatype} number")
    elif spec.upper is not None and arr.size and (arr.min() < 0 or arr.max() >= spec.upper):
        raise InvalidInput(f"input {spec.name!r} values must lie in 0..{spec.upper - 1}")
