"""Examples to sequences and sequences to batches, the same on every rank and in every attempt.

Packing puts examples side by side in rows of at most maxSeqLength tokens (best fit, an example is
never split); each example's position ids restart at 0, which transformers turns into a block-diagonal
causal mask (and flash attention into separate sequences), so attention never crosses examples.
Without packing a row is one example, right-padded to the longest row of its micro-batch.

The rows of an epoch are a seeded permutation of (seed, epoch), cut into global batches of
batchSize x ranks rows; each rank takes its slice. The last global batch of an epoch is filled up
with one-token filler rows that carry no label, so every example trains once per epoch on any world
size. A step's position is its number: a resumed run recomputes exactly the batches it would have
seen."""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass

import torch

from ..context import ConfigError
from .encode import IGNORE, Example

Row = tuple[Example, ...]  # the examples packed into one sequence (one, without packing)
FILLER: Row = ()  # a row that only completes the last global batch of an epoch


def pack(examples: list[Example], max_len: int) -> list[Row]:
    """Best-fit decreasing: the longest example first, each into the row it fills best (the one with
    the least room that still holds it), else a new row. Rows come out nearly full (a greedy pass in
    file order leaves about a fifth of each row empty on long-tailed data); the result depends only
    on the examples, and the epoch order shuffles the rows anyway."""
    rows: list[list[Example]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row), sorted
    for example in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):
        need = len(example.input_ids)
        at = bisect.bisect_left(room, (need, -1))
        if at < len(room):
            free, row = room.pop(at)
        else:
            free, row = max_len, len(rows)
            rows.append([])
        rows[row].append(example)
        if free - need > 0:
            bisect.insort(room, (free - need, row))
    return [tuple(row) for row in rows]


def make_rows(examples: list[Example], max_len: int, packing: bool) -> list[Row]:
    return pack(examples, max_len) if packing else [(e,) for e in examples]


@dataclass(frozen=True)
class Plan:
    """How rows become optimizer steps: `micro` rows per forward, `accumulation` forwards per step
    and rank, `ranks` ranks; `steps_per_epoch` global batches cover the rows once."""

    rows: int
    batch_size: int
    accumulation: int
    ranks: int
    epochs: int
    max_steps: int | None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.ranks

    @property
    def micro(self) -> int:
        return self.batch_size // self.accumulation

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.rows / self.global_batch)

    @property
    def total_steps(self) -> int:
        total = self.steps_per_epoch * self.epochs
        return min(total, self.max_steps) if self.max_steps else total


def plan(rows: int, batch_size: int, accumulation: int, ranks: int, epochs: int, max_steps: int | None) -> Plan:
    if batch_size % accumulation:
        raise ConfigError(f"finetune.batchSize={batch_size} must be divisible by "
                          f"finetune.gradientAccumulation={accumulation}")
    return Plan(rows, batch_size, accumulation, ranks, epochs, max_steps)


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return [int(i) for i in torch.randperm(n, generator=generator)]


def global_rows(rows: list[Row], p: Plan, seed: int, step: int) -> list[Row]:
    """The rows of optimizer step `step` on all ranks (filler rows complete an epoch's last batch)."""
    epoch, i = divmod(step, p.steps_per_epoch)
    order = epoch_order(seed, epoch, len(rows))[i * p.global_batch : (i + 1) * p.global_batch]
    return [rows[j] for j in order] + [FILLER] * (p.global_batch - len(order))


def targets(rows: list[Row]) -> int:
    return sum(e.targets for row in rows for e in row)


def tokens(rows: list[Row]) -> int:
    """Real (not padding, not filler) tokens: what tokens/s counts."""
    return sum(len(e.input_ids) for row in rows for e in row)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor | None  # packed rows: positions restart per example
    attention_mask: torch.Tensor | None  # unpacked rows: 1 on real tokens

    def to(self, device: torch.device) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(self.input_ids.to(device), self.labels.to(device), move(self.position_ids),
                     move(self.attention_mask))


def collate(rows: list[Row], pad_id: int, packing: bool) -> Batch:
    """One micro-batch as tensors, padded on the right to its longest row."""
    seqs = [[t for e in row for t in e.input_ids] or [pad_id] for row in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (row, seq) in enumerate(zip(rows, seqs, strict=True)):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        at = 0
        for e in row:
            labels[r, at : at + len(e.input_ids)] = torch.tensor(e.labels)
            positions[r, at : at + len(e.input_ids)] = torch.arange(len(e.input_ids))
            at += len(e.input_ids)
        positions[r, at:] = torch.arange(width - at)  # padding (or a filler row) is a sequence of its own
    if packing:
        return Batch(ids, labels, positions, None)
    return Batch(ids, labels, None, mask)


def micro_batches(rows: list[Row], p: Plan, rank: int) -> list[list[Row]]:
    """This rank's slice of a global batch, in `accumulation` micro-batches."""
    mine = rows[rank * p.batch_size : (rank + 1) * p.batch_size]
    return [mine[i : i + p.micro] for i in range(0, len(mine), p.micro)]
