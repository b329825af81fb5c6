"""What a compression run evaluates and times a model on: a recipe's held-out split, or the user's
own data for a model no recipe describes. An `Evaluation` gives the metrics of a model, the inputs
it is timed on at batch 1 and 8, and the form that is timed: a tensor in, the logits out, as a
server calls it (a transformers text classifier gets the attention mask of its padded ids). A causal
LM is timed as it generates: one decode step of every sequence over a KV cache of its context, so
its latency is ms per generated token and a speed-up is a ratio of decode tokens/s."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from kubeforge_api.trainingjob import Recipe
from torch import nn

from ..data import Data
from . import measure

EVAL_BATCH = 32


@dataclass
class Evaluation:
    """Metrics of a model (`task` classify: accuracy and evalLoss; lm: perplexity and evalLoss), the
    timing inputs per batch size and the timed form of a model."""

    task: str
    metrics: Callable[[nn.Module], dict[str, float]]
    inputs: dict[int, torch.Tensor]
    timed: Callable[[nn.Module], nn.Module] = lambda m: m
    dataset: dict[str, Any] = field(default_factory=dict)  # what a card records of the data
    timing: Literal["forward", "decode"] = "forward"  # what one timed call is (see `DecodeStep`)

    @property
    def produced(self) -> tuple[str, ...]:
        return ("accuracy", "evalLoss") if self.task == "classify" else ("perplexity", "evalLoss")


def from_recipe(data: Data, recipe: Recipe) -> Evaluation:
    """A recipe's model on its held-out split (the trainer's own `evaluate`)."""
    return Evaluation(data.task, lambda m: measure.metrics(m, data, recipe), measure.batch_inputs(data.x_eval))


def _logits(out: Any) -> torch.Tensor:
    """Logits from whatever a model returns: a tensor, a transformers output, a dict or a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, dict) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]  # type: ignore[no-any-return]
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"the model returned {type(out).__name__}, not logits")


class TextLogits(nn.Module):
    """A transformers sequence classifier on padded token ids (the mask is where ids are not padding)."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long()))


class ImageLogits(nn.Module):
    """A transformers image classifier on pixel values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(pixel_values=pixels))


class LMLogits(nn.Module):
    """A transformers causal LM on token ids: every position's logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(input_ids=ids))


class DecodeStep(nn.Module):
    """One decode step of a transformers causal LM, as generation runs it: the ids' last column is the
    token each sequence decodes, the columns before it the context, prefilled into a KV cache once per
    batch size (a new context is prefilled again). After each step the cache is cut back to the context,
    so every call does the same work: one token per sequence attending to the context."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # transformers renamed `past_key_values` to `cache` (5.2x); the name this model's forward takes
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._caches: dict[tuple[int, ...], tuple[torch.Tensor, Any]] = {}  # context shape -> (context, cache)

    def _cache(self, context: torch.Tensor) -> Any:
        from transformers import DynamicCache

        known = self._caches.get(tuple(context.shape))
        if known is not None and torch.equal(known[0], context):
            return known[1]
        cache = DynamicCache(config=getattr(self.model, "config"))  # noqa: B009 (a transformers model's config)
        self.model(input_ids=context, use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
        self._caches[tuple(context.shape)] = (context.clone(), cache)
        return cache

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        cache = self._cache(ids[:, :-1])
        out = _logits(self.model(input_ids=ids[:, -1:], use_cache=True, **{self._cache_arg: cache}))
        cache.crop(-1)
        return out


class Plain(nn.Module):
    """Any model called on one tensor, its logits taken from what it returns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _logits(self.model(x))


@torch.inference_mode()
def classify_metrics(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Accuracy and mean cross-entropy of `model` (a tensor-in, logits-out form) over labelled batches."""
    model.eval()
    loss, correct, count = 0.0, 0, 0
    for x, y in batches:
        logits = model(x).float()
        if logits.dim() != 2 or int(y.max()) >= logits.shape[-1]:
            raise ValueError(f"the model gives logits of shape {list(logits.shape)} for labels up to {int(y.max())}")
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        count += len(y)
    return {"accuracy": correct / count, "evalLoss": loss / count}


@torch.inference_mode()
def lm_metrics(model: nn.Module, windows: torch.Tensor) -> dict[str, float]:
    """Perplexity (and mean next-token loss) of a causal LM over fixed-length token windows."""
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(windows), EVAL_BATCH // 4):
        ids = windows[i : i + EVAL_BATCH // 4]
        logits = model(ids).float()
        total += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                       reduction="sum"))
        tokens += ids[:, 1:].numel()
    loss = total / tokens
    return {"perplexity": math.exp(min(loss, 50.0)), "evalLoss": loss}


def pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    """Token id rows right-padded to the longest."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)


def text_classification(model_call: Callable[[nn.Module], nn.Module], ids: list[list[int]], labels: list[int],
                        pad_id: int) -> Evaluation:
    """A text classifier on tokenized rows: batches padded to their longest row, timed on the first
    row (batch 1) and the first 8 padded together."""
    batches = [(pad(ids[i : i + EVAL_BATCH], pad_id), torch.tensor(labels[i : i + EVAL_BATCH]))
               for i in range(0, len(ids), EVAL_BATCH)]
    rows = (ids * 8)[:8]
    inputs = {1: pad(rows[:1], pad_id), 8: pad(rows, pad_id)}
    return Evaluation("classify", lambda m: classify_metrics(model_call(m), batches), inputs, model_call)


def tensor_classification(model_call: Callable[[nn.Module], nn.Module], x: torch.Tensor,
                          y: torch.Tensor) -> Evaluation:
    """A classifier on a tensor of inputs (pixel values, token ids, features) and their labels."""
    batches = [(x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]
    return Evaluation("classify", lambda m: classify_metrics(model_call(m), batches), measure.batch_inputs(x),
                      model_call)


def causal_lm(windows: torch.Tensor) -> Evaluation:
    """A causal LM's perplexity over token windows; timed decoding the last token of a window after
    the rest of it (`DecodeStep`)."""
    return Evaluation("lm", lambda m: lm_metrics(LMLogits(m), windows),
                      measure.batch_inputs(windows), DecodeStep, timing="decode")
