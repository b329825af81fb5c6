"""One optimizer step and one evaluation pass of a fine-tune.

The loss is the mean over every label token of the global batch (all ranks, all micro-batches): each
micro-batch's summed token loss is divided by the global batch's label count, which every rank knows
from the data without a collective, and multiplied by the rank count because DDP and FSDP average
gradients over ranks. So any world size and any accumulation compute the same gradient as one process
with the whole batch. Randomness (adapter dropout) is reseeded from (seed, step, rank) before each
step, which makes the random state of a step a function of its position: a resumed run draws what an
uninterrupted one would have drawn."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.functional import cross_entropy
from torch.nn.parallel import DistributedDataParallel

from ..train.common import World
from .batches import FILLER, Batch, Plan, Row, collate, micro_batches, targets
from .encode import IGNORE

MAX_GRAD_NORM = 1.0  # as transformers' Trainer


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + rank) % 2**63


def token_loss_sum(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy over the batch's label tokens."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                use_cache=False)
    logits = out.logits
    return cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch.labels.reshape(-1),
                         ignore_index=IGNORE, reduction="sum")


def _sync(model: nn.Module, last: bool, sharded: bool) -> Any:
    """Gradients are reduced on the last micro-batch only."""
    if sharded:
        model.set_requires_gradient_sync(last)  # type: ignore[operator]
        return nullcontext()
    return model.no_sync() if isinstance(model, DistributedDataParallel) and not last else nullcontext()


@dataclass(frozen=True)
class Trainer:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    plan: Plan
    world: World
    pad_id: int
    packing: bool
    sharded: bool
    seed: int
    device: torch.device

    def step(self, step: int, rows: list[Row]) -> torch.Tensor:
        """One optimizer step over the global batch `rows`; returns this rank's summed token loss."""
        torch.manual_seed(step_seed(self.seed, step, self.world.rank))
        scale = self.world.size / max(1, targets(rows))
        micros = micro_batches(rows, self.plan, self.world.rank)
        total = torch.zeros((), device=self.device)
        for i, micro in enumerate(micros):
            last = i == len(micros) - 1
            with _sync(self.model, last, self.sharded):
                loss = token_loss_sum(self.model, collate(micro, self.pad_id, self.packing).to(self.device))
                (loss * scale).backward()  # type: ignore[no-untyped-call]
            total += loss.detach()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def mean_loss(self, local_sum: torch.Tensor, rows: list[Row]) -> float:
        """The global batch's mean token loss (a collective on several ranks)."""
        if self.world.size > 1:
            dist.all_reduce(local_sum)
        return float(local_sum) / max(1, targets(rows))

    @torch.no_grad()
    def evaluate(self, rows: list[Row]) -> dict[str, float]:
        """Mean token loss and perplexity over `rows`, each rank scoring its share of every batch."""
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64)
        per = self.plan.micro * self.world.size
        for start in range(0, len(rows), per):
            batch = rows[start : start + per]
            mine = batch[self.world.rank :: self.world.size] or [FILLER]  # the same forwards on every rank
            loss = token_loss_sum(self.model, collate(mine, self.pad_id, self.packing).to(self.device))
            total += torch.tensor([float(loss), targets(mine)], dtype=torch.float64)
        if self.world.size > 1:
            dist.all_reduce(total)
        self.model.train()
        mean = float(total[0] / max(1.0, float(total[1])))
        return {"evalLoss": mean, "perplexity": math.exp(min(mean, 50.0))}
