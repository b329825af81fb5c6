"""FSDP2's optimizer step and gradient clipping on each rank's local shards.

Every element of a sharded parameter lives on exactly one rank, and the optimizers are elementwise,
so stepping the plain local tensors gives the same result as stepping the DTensors, without the
Python sharding propagation that DTensor runs on every op. The optimizer holds the very tensor
objects inside the DTensor parameters (`_local_tensor`), so its updates land in FSDP's storage, and
its state holds plain local tensors: the per-rank checkpoint format is unchanged."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor


class LocalShards:
    """The local shards of a model's (DTensor) parameters, as parameters for an optimizer."""

    def __init__(self, params: Iterable[nn.Parameter]) -> None:
        self.pairs = [(p, p._local_tensor if isinstance(p, DTensor) else p) for p in params]
        self.tensors = [local for _, local in self.pairs]

    def take_grads(self) -> list[torch.Tensor]:
        """Move each parameter's reduced gradient shard onto its local tensor (the DTensor's `grad`
        is cleared, so FSDP starts the next step from none); returns the gradients present."""
        grads = []
        for param, local in self.pairs:
            if isinstance(param, DTensor) and param._local_tensor is not local:
                raise RuntimeError("FSDP replaced a parameter's local shard after the optimizer was built")
            grad = param.grad
            if isinstance(grad, DTensor):
                param.grad, grad = None, grad._local_tensor
            local.grad = grad
            if grad is not None:
                grads.append(grad)
        return grads


@torch.no_grad()
def clip_local(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` over gradients sharded across ranks: the local squared norms, one
    all-reduce of their sum, then an in-place scale. The same result as on the DTensors."""
    norms = torch._foreach_norm(grads) if grads else []
    total_sq = torch.stack([n.square() for n in norms]).sum() if norms else torch.zeros(())
    torch.distributed.all_reduce(total_sq)
    total = total_sq.sqrt()
    if grads:
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total
