"""A model loaded for inference, whatever its format: the module in eval mode, what it takes and
returns (tensors with Open Inference Protocol datatypes, -1 for a variable dimension), and what the
server needs to turn requests into its inputs (a tokenizer, an image normalisation, label names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import torch
from kubeforge_api.inference import Datatype
from kubeforge_api.storage import ModelFormat

if TYPE_CHECKING:
    from torch.export import ExportedProgram
    from transformers import PreTrainedTokenizerBase

TORCH_DATATYPES: dict[torch.dtype, Datatype] = {
    torch.bool: Datatype.BOOL, torch.uint8: Datatype.UINT8, torch.int8: Datatype.INT8, torch.int16: Datatype.INT16,
    torch.int32: Datatype.INT32, torch.int64: Datatype.INT64, torch.float16: Datatype.FP16,
    torch.float32: Datatype.FP32, torch.float64: Datatype.FP64,
}


class Task(StrEnum):
    """How the server feeds the model and reads its output."""

    TENSORS = "tensors"  # the inputs are the model's arguments, in order; its outputs are the answer
    TEXT_CLASSIFICATION = "text-classification"  # strings -> tokenizer -> logits (+ label names)
    IMAGE_CLASSIFICATION = "image-classification"  # pixel values -> logits (+ label names)
    CAUSAL_LM = "causal-lm"  # token ids or strings -> logits of every position


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: Datatype
    shape: tuple[int, ...]  # -1: variable (the batch dimension always is)
    upper: int | None = None  # exclusive bound of integer values (token ids < vocabulary size)
    max_variable: int | None = None  # largest size of a variable non-batch dimension (None: unbounded)
    max_rows: int | None = None  # largest batch the model takes (None: the server's maxBatchSize)
    example: tuple[int, ...] = ()  # a valid shape for warm-up (its batch dimension aside); (): variable dims 1
    # For each dimension, (input name, dimension) whose size it has when variable; None: unknown until run.
    sizes_from: tuple[tuple[str, int] | None, ...] = ()


@dataclass(frozen=True)
class ImageNorm:
    """What an image processor does to 8-bit RGB pixels: `x * rescale`, then `(x - mean) / std`."""

    height: int
    width: int
    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


@dataclass(frozen=True)
class Loaded:
    format: ModelFormat
    digest: str  # the directory's identity digest (formats.identity)
    model: torch.nn.Module  # in eval mode
    task: Task
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]  # the model's own: a causal LM's logits are [N, T, vocab]
    architecture: str  # built-in architecture, transformers class name, or "torch.export"
    tokenizer: PreTrainedTokenizerBase | None = None  # text models: strings in, token ids to the model
    max_length: int | None = None  # tokens beyond this are truncated
    image: ImageNorm | None = None  # image models: how 8-bit pixels become the model's input
    id2label: dict[int, str] | None = None
    card: dict[str, Any] = field(default_factory=dict)  # a Kubeforge artifact's model card
    program: ExportedProgram | None = None  # a torch.export program (`model` is its module)
