"""What a model directory is, without loading it: its format (from the files it holds), its digest
and its size. A Kubeforge artifact's digest is its weights file's (as the model card records it);
any other directory's is the sha256 of its manifest, one line `SHA256  RELATIVE/PATH` per regular
file in path order, so the digest changes when any byte or name of any file does. Symbolic links
and anything but regular files and directories are refused: a directory that holds them is not a
model Kubeforge publishes or serves."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from kubeforge_api.storage import ModelFormat

KUBEFORGE_CARD = "model-card.json"
KUBEFORGE_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
EXPORTED_PROGRAM = "model.pt2"
MAX_FILES = 10_000


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (no torch: the storage initializer verifies with it)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FormatError(ValueError):
    """A directory that holds no model Kubeforge can load (one line, naming the directory)."""


@dataclass(frozen=True)
class Identity:
    format: ModelFormat
    digest: str
    size_bytes: int


def files(directory: Path) -> list[Path]:
    """Every regular file under `directory`, relative, in path order; refuses links and special files."""
    if not directory.is_dir():
        raise FormatError(f"{directory}: not a directory")
    found: list[Path] = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise FormatError(f"{directory}: {rel} is a link or a special file")
        if path.is_file():
            found.append(rel)
        if len(found) > MAX_FILES:
            raise FormatError(f"{directory}: more than {MAX_FILES} files")
    return found


def detect(directory: Path) -> ModelFormat:
    """The format a directory's files say it has."""
    if (directory / KUBEFORGE_CARD).is_file():
        return ModelFormat.KUBEFORGE
    if (directory / HF_CONFIG).is_file():
        return ModelFormat.HF_TRANSFORMERS
    if (directory / EXPORTED_PROGRAM).is_file():
        return ModelFormat.TORCH_EXPORT
    if not directory.is_dir():
        raise FormatError(f"{directory}: no such model directory")
    raise FormatError(f"{directory}: not a model directory (no {KUBEFORGE_CARD}, {HF_CONFIG} or {EXPORTED_PROGRAM})")


def manifest_digest(directory: Path) -> str:
    """sha256 of the directory's manifest (see the module docstring)."""
    h = hashlib.sha256()
    for rel in files(directory):
        h.update(f"{sha256_file(directory / rel)}  {rel.as_posix()}\n".encode())
    return "sha256:" + h.hexdigest()


def digest(directory: Path, fmt: ModelFormat) -> str:
    if fmt == ModelFormat.KUBEFORGE:
        return "sha256:" + sha256_file(directory / KUBEFORGE_WEIGHTS)
    return manifest_digest(directory)


def identify(directory: Path) -> Identity:
    """Format, digest and size of a model directory."""
    fmt = detect(directory)
    listed = files(directory)
    return Identity(fmt, digest(directory, fmt), sum((directory / rel).stat().st_size for rel in listed))
