"""A `model.pt2` archive made safe to hand to `torch.export.load`, which would otherwise run code
from the file in five ways: it unpickles (`torch.load(weights_only=False)`) weights and constants
marked `use_pickle`, it unpickles custom and opaque constant objects, it falls back to an unrestricted
unpickling of the sample inputs when the restricted one fails, it evaluates every symbolic shape
expression of the program's JSON as Python (sympy's `sympify`), and `ExportedProgram.module()` pastes
the recorded forward argument names into Python source it executes. AOTInductor entries are compiled
code, and an archive of the old format is pickles throughout.

So the file is read once into memory and rebuilt from an allow-list before torch sees it: only the
program's JSON, the JSON payload configs and the raw tensor payloads they name (plus the archive's
version files) are kept; anything pickled or compiled is refused; the sample inputs are emptied (the
signature comes from the graph, not from them); every shape expression must parse as arithmetic on
sympy symbols and integers; operator targets must be torch, `_operator` or `math` functions; argument
names must be identifiers. Refusals are one `FormatError` line."""

from __future__ import annotations

import ast
import builtins
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from .identity import FormatError

MODEL = "model"
PROGRAM = f"models/{MODEL}.json"
WEIGHTS_CONFIG = f"data/weights/{MODEL}_weights_config.json"
CONSTANTS_CONFIG = f"data/constants/{MODEL}_constants_config.json"
SAMPLE_INPUTS = f"data/sample_inputs/{MODEL}.pt"
VERSION_FILES = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")
ARCHIVE_FORMAT = b"pt2"
PAYLOAD_NAME = re.compile(r"^(weight|tensor)_[0-9]+$")
TARGET = re.compile(r"^(torch\.ops\.[A-Za-z_][A-Za-z0-9_.]*|_operator\.[a-z_]+|math\.[a-z_]+|torch\.sym_[a-z_]+)$")
DENIED_OPS = ("from_file", "_load", "save")  # tensors from files: not what a served program may do
# What a shape expression may call: sympy's constructors and the functions torch's deserializer knows.
EXPR_CALLS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Mod", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And",
    "Or", "Not", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "TruncToFloat",
    "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "IsNonOverlappingAndDenseIndicator",
    "OpaqueUnaryFn_sqrt", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "BitwiseFn_bitwise_xor"})
EXPR_NAMES = frozenset({"True", "False", "oo", "zoo", "nan", "pi", "E", "int_oo"})
EXPR_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Call, ast.Name, ast.Load,
              ast.Constant, ast.keyword, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
SYMBOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # s0, u1: never a dunder
BUILTIN_NAMES = frozenset(dir(builtins))  # sympy evaluates with Python's builtins in reach: never name one


def checked_archive(directory: Path, path: Path) -> bytes:
    """The bytes of an archive `torch.export.load` may read: `path`'s allowed entries, rebuilt."""
    data = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise FormatError(f"{directory}: {path.name} is not a torch.export archive (not a zip file); "
                          "pickled models are never loaded")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        root, entries = _entries(directory, path.name, z)

        def read(name: str) -> bytes:
            return z.read(root + name)

        if read("archive_format").strip() != ARCHIVE_FORMAT:
            raise FormatError(f"{directory}: {path.name} is not a torch.export archive (archive_format)")
        kept = {name: read(name) for name in VERSION_FILES if name in entries}
        kept[PROGRAM] = _checked_program(directory, read(PROGRAM))
        for config, folder in ((WEIGHTS_CONFIG, "data/weights/"), (CONSTANTS_CONFIG, "data/constants/")):
            if config in entries:
                kept[config] = read(config)
                for payload in _payloads(directory, config, kept[config]):
                    if folder + payload not in entries:
                        raise FormatError(f"{directory}: {path.name} lacks {folder}{payload}")
                    kept[folder + payload] = read(folder + payload)
        kept[SAMPLE_INPUTS] = b""
        _refuse_unknown(directory, path.name, entries, kept)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, content in kept.items():
            z.writestr(root + name, content)
    return out.getvalue()


def _entries(directory: Path, name: str, z: zipfile.ZipFile) -> tuple[str, set[str]]:
    """(the archive's one top-level folder with its slash, the entries below it)."""
    names = [n for n in z.namelist() if not n.endswith("/")]
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise FormatError(f"{directory}: {name} is not a torch.export archive (its entries are not in one folder)")
    root = roots.pop() + "/"
    entries = {n[len(root):] for n in names}
    if PROGRAM not in entries or "archive_format" not in entries:
        raise FormatError(f"{directory}: {name} holds no torch.export program ({PROGRAM}); pickled models and "
                          "archives of the old format are never loaded")
    return root, entries


def _refuse_unknown(directory: Path, name: str, entries: set[str], kept: dict[str, bytes]) -> None:
    """Entries that are neither kept nor harmless text (extra files, which torch only reads back) are refused."""
    for entry in sorted(entries):
        if entry in kept or entry.startswith("extra/"):
            continue
        if entry.startswith("data/aotinductor/"):
            raise FormatError(f"{directory}: {name} holds AOTInductor code ({entry}); only programs are loaded")
        raise FormatError(f"{directory}: {name} holds {entry[:120]}, which is not part of a torch.export "
                          "program with plain tensor weights (pickled entries are never loaded)")


def _payloads(directory: Path, config_name: str, raw: bytes) -> list[str]:
    """The raw tensor files a payload config names; refuses pickled payloads and objects."""
    try:
        config = json.loads(raw)["config"]
        items = list(config.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise FormatError(f"{directory}: model.pt2 has a malformed {config_name}") from None
    names: list[str] = []
    for fqn, meta in items:
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False or meta.get("tensor_meta") is None:
            raise FormatError(f"{directory}: model.pt2 stores {str(fqn)[:80]!r} pickled or as an object; "
                              "only plain tensor payloads are loaded")
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not PAYLOAD_NAME.match(path_name):
            raise FormatError(f"{directory}: model.pt2 names a payload {str(path_name)[:80]!r}, not a tensor file")
        names.append(path_name)
    return sorted(set(names))


def _checked_program(directory: Path, raw: bytes) -> bytes:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise FormatError(f"{directory}: model.pt2 has a program that is not JSON") from None
    _walk(directory, doc)
    return raw


def _walk(directory: Path, node: Any) -> None:
    """Every shape expression, operator target and argument name in the program's JSON, checked."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key == "expr_str":
                check_expression(directory, value)
            elif key == "target" and isinstance(value, str):
                _check_target(directory, value)
            elif key == "forward_arg_names" and value is not None:
                if not isinstance(value, list) or not all(isinstance(v, str) and v.isidentifier() for v in value):
                    raise FormatError(f"{directory}: model.pt2 has argument names that are not identifiers")
            else:
                stack.append(value)


def _check_target(directory: Path, target: str) -> None:
    if not TARGET.match(target) or any(part in DENIED_OPS for part in target.split(".")):
        raise FormatError(f"{directory}: model.pt2 calls {target[:120]!r}, which is not a torch operator")


def check_expression(directory: Path, text: Any) -> None:
    """Refuse a shape expression that is anything but arithmetic on symbols, integers and sympy functions."""
    if not isinstance(text, str) or len(text) > 10_000:
        raise FormatError(f"{directory}: model.pt2 has a malformed shape expression")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise FormatError(f"{directory}: model.pt2 has a shape expression that does not parse") from None
    names = {id(c.args[0]) for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
             and c.func.id == "Symbol" and c.args}  # a string may only name a symbol
    for node in ast.walk(tree):
        ok = isinstance(node, EXPR_NODES) and not isinstance(node, ast.Constant | ast.Name | ast.Call)
        if isinstance(node, ast.Constant):
            ok = type(node.value) in (int, float, bool) or (isinstance(node.value, str) and id(node) in names
                                                            and bool(SYMBOL_NAME.match(node.value)))
        elif isinstance(node, ast.Name):
            ok = node.id in EXPR_CALLS or node.id in EXPR_NAMES or (
                bool(SYMBOL_NAME.match(node.id)) and node.id not in BUILTIN_NAMES)
        elif isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id in EXPR_CALLS
        if not ok:
            raise FormatError(f"{directory}: model.pt2 has a shape expression that is not arithmetic on symbols "
                              f"({text[:80]!r})")
