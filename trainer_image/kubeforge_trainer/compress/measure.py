"""What the gate compares: the task metric on the held-out split (the trainer's own `evaluate`),
weights size, stored parameter count and latency at batch 1 and 8.

Timing is interleaved: every round times each model at batch 1 and at batch 8 (A1 B1 A8 B8, then
again), so machine noise hits every model alike, at one fixed thread count (the CPUs the pod is
guaranteed). Each model's time per batch size is the median over the rounds with its quartiles; a
speed-up is the baseline's time over the candidate's *round by round* (the pair shares the round's
load), reported as the median of those ratios with their quartiles. A model whose batch-1 call
takes longer than its batch-8 call was measured under interference (a batch of 8 does at least the
work of a batch of 1), so the session is measured again, a bounded number of times, and flagged if it
stays implausible. Numbers are rounded to what the measurement supports (4 significant digits for
times, 3 for ratios)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from kubeforge_api.compression import Latency, Spread
from kubeforge_api.trainingjob import Recipe
from torch import nn

from ..data import Data
from ..train.common import evaluate

BATCHES = (1, 8)
RETRIES = 2  # re-measurements of a session whose batch-1 time exceeds its batch-8 time

Samples = dict[int, list[float]]  # batch size -> ms per forward, one value per round
Inputs = dict[int, torch.Tensor]  # batch size -> the input a model is timed on


def metrics(model: nn.Module, data: Data, recipe: Recipe) -> dict[str, float]:
    """`evaluate` in fp32 (a bf16 recipe's autocast would not apply to int8 kernels)."""
    out = evaluate(model, data, recipe.model_copy(update={"precision": "fp32"}))
    model.eval()
    return out


def sig(x: float, digits: int) -> float:
    """`x` rounded to `digits` significant digits."""
    return float(f"{x:.{digits}g}")


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(lower quartile, median, upper quartile); one value is its own spread."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def summary(samples: Samples, digits: int) -> Latency:
    """Median and quartiles per batch size, rounded."""
    (l1, m1, h1), (l8, m8, h8) = (quartiles(samples[b]) for b in BATCHES)
    return Latency(batch1=sig(m1, digits), batch8=sig(m8, digits),
                   batch1_spread=Spread(low=sig(l1, digits), high=sig(h1, digits)),
                   batch8_spread=Spread(low=sig(l8, digits), high=sig(h8, digits)))


def latency(samples: Samples) -> Latency:
    return summary(samples, 4)


def speedup(base: Samples, other: Samples) -> Latency:
    """Baseline time / other time, round by round (rounds are paired), summarized."""
    return summary({b: [x / y for x, y in zip(base[b], other[b], strict=True)] for b in BATCHES}, 3)


def implausible(samples: Samples) -> bool:
    """One batch-1 call slower than one batch-8 call: the rounds were disturbed."""
    return statistics.median(samples[1]) > statistics.median(samples[8])


def _time(model: nn.Module, x: torch.Tensor, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        model(x)
    return (time.perf_counter() - start) / iters * 1000.0


def batch_inputs(x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The first 1 and 8 rows of `x` (rows repeated when there are fewer)."""
    out = {}
    for batch in BATCHES:
        rows = x[:batch]
        if len(rows) < batch:
            rows = rows.repeat((batch + len(rows) - 1) // len(rows), *([1] * (rows.dim() - 1)))[:batch]
        out[batch] = rows
    return out


def _inputs(source: Data | Inputs) -> Inputs:
    """Timing inputs per batch size: given, or the first rows of a data set's held-out split."""
    return source if isinstance(source, dict) else batch_inputs(source.x_eval)


@torch.inference_mode()
def latencies(models: Sequence[nn.Module], source: Data | Inputs, rounds: int = 7,
              target_ms: float = 30.0) -> list[Samples]:
    """ms per forward for each model at each batch size, one value per round. After warm-up, each
    round times every model at every batch size once; iterations per timing are sized so one takes
    about target_ms. `source`: the inputs per batch size, or a data set whose held-out rows they are."""
    inputs = _inputs(source)
    iters: dict[tuple[int, int], int] = {}
    for i, m in enumerate(models):
        m.eval()
        for batch, x in inputs.items():
            for _ in range(3):
                m(x)
            iters[i, batch] = max(1, int(target_ms / max(_time(m, x, 2), 1e-3)))
    out: list[Samples] = [{b: [] for b in BATCHES} for _ in models]
    for _ in range(rounds):
        for batch, x in inputs.items():
            for i, m in enumerate(models):
                out[i][batch].append(_time(m, x, iters[i, batch]))
    return out


@dataclass(frozen=True)
class Session:
    """One interleaved measurement of the baseline (index 0) and candidates, after re-measuring."""

    samples: list[Samples]
    attempts: int  # 1 + re-measurements

    @property
    def invalid(self) -> list[int]:
        """Models whose timings stayed implausible."""
        return [i for i, s in enumerate(self.samples) if implausible(s)]


def session(models: Sequence[nn.Module], source: Data | Inputs, rounds: int, retries: int = RETRIES) -> Session:
    """`latencies`, measured again (up to `retries` times) while any model's batch-1 time exceeds its batch-8."""
    attempts = 1
    samples = latencies(models, source, rounds)
    while attempts <= retries and any(implausible(s) for s in samples):
        attempts += 1
        samples = latencies(models, source, rounds)
    return Session(samples, attempts)
