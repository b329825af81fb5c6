"""The one entry for loading any model directory for inference: `load` detects the format and
dispatches to its loader; every loader returns a `Loaded` in eval mode or raises one `FormatError`
line naming the directory. The digest a `Loaded` carries is the directory's identity digest."""

from __future__ import annotations

from pathlib import Path

from kubeforge_api.storage import ModelFormat

from .exported import load_exported
from .hf import load_hf
from .identity import EXPORTED_PROGRAM, HF_CONFIG, KUBEFORGE_CARD, FormatError, detect, digest
from .kubeforge import load_kubeforge
from .loaded import Loaded

MARKERS = (KUBEFORGE_CARD, HF_CONFIG, EXPORTED_PROGRAM)


def load(directory: Path) -> Loaded:
    """The model in `directory`, whatever its format, ready to run."""
    if not directory.is_dir():
        raise FormatError(f"{directory}: no such model directory (a model directory holds {', '.join(MARKERS)})")
    fmt = detect(directory)
    if fmt == ModelFormat.KUBEFORGE:
        return load_kubeforge(directory)
    try:
        identity = digest(directory, fmt)
    except OSError as e:
        raise FormatError(f"{directory}: cannot be read ({e.strerror or type(e).__name__})") from None
    if fmt == ModelFormat.HF_TRANSFORMERS:
        return load_hf(directory, identity)
    return load_exported(directory, identity)


def missing(directory: Path) -> bool:
    """Whether `directory` holds no model at all (as opposed to one that does not load)."""
    return not any((directory / name).is_file() for name in MARKERS)
