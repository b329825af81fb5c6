"""Kubeforge artifacts through the one artifact loader (`artifacts.load_model`), in the form their
back end serves them (`variants.served`), described from the model card's architecture."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from kubeforge_api.inference import Datatype
from kubeforge_api.storage import ModelFormat

from ..artifacts import ArtifactError, load_model
from ..variants import served
from ..variants.hf import HFError, check_side_files, is_hf
from .hf import describe_hf
from .identity import FormatError
from .loaded import Loaded, Task, Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH = (INPUT_NAME, 0)


def load_kubeforge(directory: Path) -> Loaded:
    try:
        card, model = load_model(directory)
    except ArtifactError as e:
        raise FormatError(str(e)) from None
    if is_hf(card.get("architecture", {})):
        return _hf_variant(directory, card, model)
    return describe(card, served(card, model))


def _hf_variant(directory: Path, card: dict[str, Any], model: torch.nn.Module) -> Loaded:
    """A compressed variant of a Hugging Face model: the int8 transformers model the card rebuilt, with
    the tokenizer or image settings of the files beside it (checked against the card's digests). It
    runs as it was rebuilt: a compiled form would take one positional input, not the attention mask."""
    arch = card["architecture"]
    try:
        check_side_files(directory, arch)
        task = Task(arch.get("task"))
    except (HFError, ValueError) as e:
        raise FormatError(f"{directory}: {e}") from None
    digest = str((card.get("weights") or {}).get("digest", ""))
    return describe_hf(directory, dict(arch.get("config") or {}), cast("PreTrainedModel", model), task,
                       str(arch.get("class", "")), ModelFormat.KUBEFORGE, digest)


def describe(card: dict[str, Any], model: torch.nn.Module) -> Loaded:
    """A loaded artifact (its card and model) with the tensors of its architecture (mlp, cnn, gpt)."""
    arch = card.get("architecture", {})
    kind = arch.get("model")
    digest = str((card.get("weights") or {}).get("digest", ""))
    task = Task.TENSORS
    if kind == "gpt":
        vocab, seq = int(arch["vocab"]), int(arch["seqLen"])
        task = Task.CAUSAL_LM
        x = Tensor(INPUT_NAME, Datatype.INT64, (-1, -1), upper=vocab, max_variable=seq, example=(1, seq))
        y = Tensor(OUTPUT_NAME, Datatype.FP32, (-1, -1, vocab), sizes_from=(BATCH, (INPUT_NAME, 1), None))
    elif kind in ("mlp", "cnn"):
        features = int(arch["inputDim"]) if kind == "mlp" else math.prod(int(d) for d in arch["imageShape"])
        x = Tensor(INPUT_NAME, Datatype.FP32, (-1, features))
        y = Tensor(OUTPUT_NAME, Datatype.FP32, (-1, int(arch["numClasses"])), sizes_from=(BATCH, None))
    else:
        raise FormatError(f"model card architecture {kind!r} has no known signature")
    return Loaded(ModelFormat.KUBEFORGE, digest, model, task, (x,), (y,), str(kind), card=card)
