"""Model formats: what a model directory is (`identity`: format, digest, size) and how each format
loads for inference (`load`: Kubeforge artifacts, Hugging Face transformers directories, torch.export
programs), never executing pickled code. Above the Kubeforge artifact layer, below everything
that serves, compresses or publishes a model."""

from .identity import FormatError
from .loaded import ImageNorm, Loaded, Task, Tensor
from .loading import load

__all__ = ["FormatError", "ImageNorm", "Loaded", "Task", "Tensor", "load"]
