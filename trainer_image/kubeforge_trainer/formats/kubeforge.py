"""Kubeforge artifacts through the one artifact loader (`artifacts.load_model`), in the form their
back end serves them (`variants.served`), described from the model card's architecture."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.inference import Datatype
from kubeforge_api.storage import ModelFormat

from ..artifacts import ArtifactError, load_model
from ..variants import served
from .identity import FormatError
from .loaded import Loaded, Task, Tensor

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH = (INPUT_NAME, 0)


def load_kubeforge(directory: Path) -> Loaded:
    try:
        card, model = load_model(directory)
    except ArtifactError as e:
        raise FormatError(str(e)) from None
    return describe(card, served(card, model))


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
