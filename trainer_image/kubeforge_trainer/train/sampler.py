"""Position-aware data order, the same at any world size, so elastic training can resize mid-epoch.

An epoch is a seeded permutation of the training set (the samples past the last whole global batch
are left out, as they always were). The run's position is the *global sample offset*: how many
samples the committed steps consumed, across epochs; a checkpoint stores it (`sampleOffset`). A
step takes the next global batch at the offset and splits it into contiguous slices, one per rank of
the *current* world (sizes differ by at most one when the batch does not divide evenly). A resume at
another world size continues at the stored offset, so in the committed trajectory (the steps up to
each checkpoint a resume starts from, then the rest) every sample of an epoch is used exactly once.
Ranks whose slices differ in size weight their loss by slice size (`loss_weight`), so the averaged
gradient is still the mean over the global batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .common import _epoch_order


@dataclass(frozen=True)
class Sampler:
    """The global data order of a run: `n` samples, global batch `batch`, permutation seed `seed`."""

    seed: int
    n: int
    batch: int

    @property
    def per_epoch(self) -> int:
        """Samples an epoch uses: its whole global batches."""
        return (self.n // self.batch) * self.batch

    def global_batch(self, offset: int) -> torch.Tensor:
        """The indices of the global batch that starts at sample offset `offset`."""
        epoch, i = divmod(offset, self.per_epoch)
        return _epoch_order(self.seed, epoch, self.n)[i : i + self.batch]

    def offset_at(self, step: int) -> int:
        """The offset after `step` steps (every step takes one whole global batch)."""
        return step * self.batch


def rank_slice(indices: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """This rank's contiguous part of a global batch: the first `len % size` ranks take one more."""
    return torch.tensor_split(indices, size)[rank]


def loss_weight(local: int, batch: int, size: int) -> float:
    """The factor on a rank's mean loss that makes the ranks' averaged gradient the global batch's
    mean (1.0 when the batch splits evenly)."""
    return local * size / batch
