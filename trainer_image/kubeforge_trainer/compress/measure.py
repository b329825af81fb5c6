"""What the gate compares: the task metric on the held-out split (the trainer's own `evaluate`),
weights size, stored parameter count and latency at batch 1 and 8, timed for all models together,
interleaved round by round at one fixed thread count so machine noise hits every model alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from kubeforge_api.trainingjob import Recipe
from torch import nn

from ..data import Data
from ..train.common import evaluate

BATCHES = (1, 8)


def metrics(model: nn.Module, data: Data, recipe: Recipe) -> dict[str, float]:
    """`evaluate` in fp32 (a bf16 recipe's autocast would not apply to int8 kernels)."""
    out = evaluate(model, data, recipe.model_copy(update={"precision": "fp32"}))
    model.eval()
    return out


def _time(model: nn.Module, x: torch.Tensor, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        model(x)
    return (time.perf_counter() - start) / iters * 1000.0


@torch.inference_mode()
def latencies(models: Sequence[nn.Module], data: Data, rounds: int = 7,
              target_ms: float = 20.0) -> list[dict[int, float]]:
    """Median ms per forward for each model at each batch size. Each round times every model once
    (A B C A B C ...), after warm-up; iterations per timing are sized so one takes ~target_ms."""
    result: list[dict[int, float]] = [{} for _ in models]
    for batch in BATCHES:
        x = data.x_eval[:batch]
        if len(x) < batch:
            x = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))[:batch]
        iters = []
        for m in models:
            m.eval()
            for _ in range(3):
                m(x)
            iters.append(max(1, int(target_ms / max(_time(m, x, 2), 1e-3))))
        samples: list[list[float]] = [[] for _ in models]
        for _ in range(rounds):
            for i, m in enumerate(models):
                samples[i].append(_time(m, x, iters[i]))
        for i, s in enumerate(samples):
            result[i][batch] = statistics.median(s)
    return result
