"""Model formats: what a model directory is (`identity`: format, digest, size) and how each format
loads for inference (`load`: Kubeforge artifacts, Hugging Face transformers directories, torch.export
programs), never executing pickled code. Above the Kubeforge artifact layer, below everything
that serves, compresses or publishes a model. Importing the package costs nothing: `identity` needs
no torch (the storage initializer verifies digests with it), and `load` imports the loaders when
first asked for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .identity import FormatError

if TYPE_CHECKING:
    from .loaded import ImageNorm, Loaded, Task, Tensor
    from .loading import load

__all__ = ["FormatError", "ImageNorm", "Loaded", "Task", "Tensor", "load"]
_LAZY = {"ImageNorm": "loaded", "Loaded": "loaded", "Task": "loaded", "Tensor": "loaded", "load": "loading"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_LAZY[name]}", __name__), name)
