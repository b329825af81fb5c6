"""torch.export programs (`model.pt2` written by `torch.export.save`): loaded from the checked archive
(`program_archive`: nothing pickled or compiled is ever read), described from the program itself.
Its inputs are the program's user inputs (tensors only, positional or keyword, flat), named as its
forward arguments; dtypes and shapes come from the graph's placeholders, a symbolic dimension is
variable (-1), bounded by the program's range constraints. Its outputs are a tensor (`output`), a
flat tuple or list (`output_0`, ...) or a flat dict (its keys)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.storage import ModelFormat
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

from .identity import EXPORTED_PROGRAM, FormatError
from .loaded import TORCH_DATATYPES, Loaded, Task, Tensor
from .program_archive import checked_archive

ARCHITECTURE = "torch.export"
QUIET_LOGGERS = ("torch.export", "torch._export", "torch.export.pt2_archive._package")
UNBOUNDED = 2**62  # what a range constraint's int_oo compares above


def load_exported(directory: Path, digest: str) -> Loaded:
    clean = checked_archive(directory, directory / EXPORTED_PROGRAM)
    try:
        with _quiet():
            program = torch.export.load(io.BytesIO(clean))
    except Exception as e:  # a malformed program: torch raises many types
        raise FormatError(f"{directory}: {EXPORTED_PROGRAM} does not load ({_first_line(e)})") from None
    inputs = describe_inputs(directory, program)
    outputs = describe_outputs(directory, program, inputs)
    try:
        module = program.module()
    except Exception as e:
        raise FormatError(f"{directory}: {EXPORTED_PROGRAM} does not load ({_first_line(e)})") from None
    return Loaded(ModelFormat.TORCH_EXPORT, digest, module, Task.TENSORS, inputs, outputs, ARCHITECTURE,
                  program=program)


def describe_inputs(directory: Path, program: ExportedProgram) -> tuple[Tensor, ...]:
    """The program's user inputs, in the order its forward takes them (positional, then keyword)."""
    spec = program.call_spec.in_spec
    if spec is None or spec.num_children != 2 or not all(
            spec.child(i).child(j).is_leaf() for i in (0, 1) for j in range(spec.child(i).num_children)):
        raise FormatError(f"{directory}: the program takes nested inputs; Kubeforge serves programs of flat tensors")
    names = list(_forward_names(program, spec.child(0).num_children)) + [str(k) for k in spec.child(1).context]
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    if len(user) != len(names):
        raise FormatError(f"{directory}: the program's inputs do not match its signature")
    bounds = _bounds(program)
    tensors = []
    for name, input_spec in zip(names, user, strict=True):
        if not isinstance(input_spec.arg, TensorArgument):
            raise FormatError(f"{directory}: program input {name!r} is not a tensor")
        value = placeholders[input_spec.arg.name].meta.get("val")
        tensors.append(_tensor(directory, name, value, bounds, {}))
    return tuple(tensors)


def describe_outputs(directory: Path, program: ExportedProgram, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    spec = program.call_spec.out_spec
    user = [s for s in program.graph_signature.output_specs if s.kind == OutputKind.USER_OUTPUT]
    if spec is None or not all(isinstance(s.arg, TensorArgument) for s in user):
        raise FormatError(f"{directory}: the program returns something other than tensors")
    if spec.is_leaf():
        names = ["output"]
    elif spec.type is dict and all(spec.child(i).is_leaf() for i in range(spec.num_children)):
        names = [str(k) for k in spec.context]
    elif spec.type in (tuple, list) and all(spec.child(i).is_leaf() for i in range(spec.num_children)):
        names = [f"output_{i}" for i in range(spec.num_children)]
    else:
        raise FormatError(f"{directory}: the program returns nested outputs; Kubeforge serves flat ones")
    values = {n.name: n.meta.get("val") for n in program.graph.nodes}
    origins = _symbol_origins(program, inputs)
    bounds = _bounds(program)
    return tuple(_tensor(directory, name, values.get(str(s.arg.name)), bounds, origins)
                 for name, s in zip(names, user, strict=True))


def _tensor(directory: Path, name: str, value: Any, bounds: dict[str, tuple[int, int]],
            origins: dict[str, tuple[str, int]]) -> Tensor:
    """A placeholder's or output's fake tensor as a Tensor (its symbolic dimensions variable)."""
    if not isinstance(value, torch.Tensor):
        raise FormatError(f"{directory}: the program's {name!r} has no tensor metadata")
    datatype = TORCH_DATATYPES.get(value.dtype)
    if datatype is None:
        raise FormatError(f"{directory}: the program's {name!r} has dtype {value.dtype}, which the Open Inference "
                          "Protocol cannot carry")
    shape: list[int] = []
    sizes_from: list[tuple[str, int] | None] = []
    uppers: list[int] = []
    for size in value.shape:
        if isinstance(size, torch.SymInt):
            symbol = str(size.node.expr)
            shape.append(-1)
            sizes_from.append(origins.get(symbol))
            uppers.append(bounds.get(symbol, (0, UNBOUNDED))[1])
        else:
            shape.append(int(size))
            sizes_from.append(None)
            uppers.append(int(size))
    rows, rest = (uppers[0], uppers[1:]) if uppers else (UNBOUNDED, [])
    upper = max((u for u, d in zip(rest, shape[1:], strict=True) if d == -1), default=UNBOUNDED)
    return Tensor(name, datatype, tuple(shape), max_variable=upper if upper < UNBOUNDED else None,
                  max_rows=rows if rows < UNBOUNDED else None, sizes_from=tuple(sizes_from),
                  example=tuple(_hint(s) for s in value.shape))


def _forward_names(program: ExportedProgram, count: int) -> list[str]:
    sig = program.module_call_graph[0].signature if program.module_call_graph else None
    names = list(sig.forward_arg_names or []) if sig is not None else []
    return names[:count] if len(names) >= count else [f"arg_{i}" for i in range(count)]  # torch's own default


def _bounds(program: ExportedProgram) -> dict[str, tuple[int, int]]:
    """Each symbol's range, as the program's range constraints give it."""
    return {str(symbol): (_bound(vr.lower, 0), _bound(vr.upper, UNBOUNDED))
            for symbol, vr in program.range_constraints.items()}


def _bound(value: Any, infinite: int) -> int:
    """A range end as an int (sympy's infinities, torch's int_oo: `infinite`)."""
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return infinite
    return n if abs(n) < UNBOUNDED else infinite


def _symbol_origins(program: ExportedProgram, inputs: tuple[Tensor, ...]) -> dict[str, tuple[str, int]]:
    """For each symbol that is a dimension of an input, that (input, dimension)."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT
            and isinstance(s.arg, TensorArgument)]
    by_name = {n.name: n.meta.get("val") for n in placeholders}
    origins: dict[str, tuple[str, int]] = {}
    for tensor, graph_name in zip(inputs, user, strict=True):
        value = by_name.get(graph_name)
        for d, size in enumerate(value.shape if isinstance(value, torch.Tensor) else ()):
            if isinstance(size, torch.SymInt):
                origins.setdefault(str(size.node.expr), (tensor.name, d))
    return origins


def _hint(size: int | torch.SymInt) -> int:
    """The size the program was exported with (a shape every constraint holds for)."""
    if not isinstance(size, torch.SymInt):
        return int(size)
    hint = size.node.hint
    return int(hint) if isinstance(hint, int) else 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch logs a deserialization failure with its traceback before raising: the caller says it in one line."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text[:300]}"
