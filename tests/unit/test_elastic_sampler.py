"""The position-aware data order of elastic training: a run that resizes mid-epoch (3 ranks, then 2,
then 3 again, resuming each time from the global sample offset of its last checkpoint) uses every
sample of each epoch exactly once in its committed trajectory, the same global batches as a run
that never resized, and uneven slices weigh their loss so the gradient stays the batch mean."""

from __future__ import annotations

from collections import Counter

import torch
from kubeforge_trainer.train.sampler import Sampler, loss_weight, rank_slice

N, BATCH = 103, 10  # 10 whole global batches an epoch, 3 samples left out


def committed(order: Sampler, plan: list[tuple[int, int, int]]) -> list[list[torch.Tensor]]:
    """Run `plan`: (world size, steps run, step of the checkpoint the next segment resumes from);
    returns each committed step's per-rank slices (steps past a segment's checkpoint are redone)."""
    steps: list[list[torch.Tensor]] = []
    offset = 0
    for size, run, ckpt in plan:
        done: list[list[torch.Tensor]] = []
        at = offset
        for _ in range(run):
            batch = order.global_batch(at)
            at += len(batch)
            done.append([rank_slice(batch, r, size) for r in range(size)])
        steps += done[:ckpt]
        offset += sum(len(torch.cat(s)) for s in done[:ckpt])
    return steps


def test_every_sample_of_an_epoch_is_used_once_across_world_size_changes() -> None:
    order = Sampler(seed=7, n=N, batch=BATCH)
    steps = committed(order, [(3, 4, 3), (2, 9, 8), (3, 20, 19)])  # resized at steps 3 and 11, 30 steps in all
    assert len(steps) == 30
    for epoch in range(3):
        used = Counter(int(i) for s in steps[epoch * 10:(epoch + 1) * 10] for part in s for i in part)
        assert len(used) == order.per_epoch and set(used.values()) == {1}, epoch
    still = [[rank_slice(order.global_batch(order.offset_at(k)), 0, 1)] for k in range(30)]
    assert all(torch.equal(torch.cat(a), torch.cat(b)) for a, b in zip(steps, still, strict=True))


def test_uneven_slices_weigh_their_loss_to_the_batch_mean() -> None:
    parts = [len(p) for p in torch.tensor_split(torch.arange(BATCH), 3)]
    assert parts == [4, 3, 3]
    weights = [loss_weight(n, BATCH, 3) for n in parts]
    assert sum(weights) / 3 == 1.0 and loss_weight(5, 10, 2) == 1.0
    losses = torch.rand(BATCH)
    means = [chunk.mean() * w for chunk, w in zip(torch.tensor_split(losses, 3), weights, strict=True)]
    assert torch.isclose(torch.stack(means).mean(), losses.mean())

