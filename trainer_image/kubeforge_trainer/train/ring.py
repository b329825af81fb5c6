"""FSDP2's all-gather and reduce-scatter as rings of point-to-point exchanges, for gloo (CPU).

Gloo's `reduce_scatter_tensor` costs as much as an all-reduce of the whole input (2 ranks, 8 MB:
about 13 ms against 8 ms), and its `all_gather_into_tensor` about twice the bytes it moves. A ring
sends each rank's share once per step, n-1 steps: on 2 ranks the reduce-scatter is one exchange of
half the input and an add (about 5 ms), the all-gather one exchange of the shard (about 3.5 ms)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp._fully_shard._fsdp_api import AllGather, ReduceScatter

_AVG, _SUM = dist.ReduceOp.AVG, dist.ReduceOp.SUM


def _exchange(send: torch.Tensor, recv: torch.Tensor, group: dist.ProcessGroup) -> None:
    """Send to the next rank of the ring while receiving from the previous one."""
    n, r = group.size(), group.rank()
    ops = [dist.P2POp(dist.isend, send, group=group, group_peer=(r + 1) % n),
           dist.P2POp(dist.irecv, recv, group=group, group_peer=(r - 1) % n)]
    for work in dist.batch_isend_irecv(ops):
        work.wait()


class _Plain:
    def allocate(self, size: Sequence[int | torch.SymInt], *, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
        return torch.empty([int(s) for s in size], dtype=dtype, device=device)


class RingAllGather(_Plain, AllGather):
    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: dist.ProcessGroup,
                 async_op: bool = False) -> None:
        n, r = group.size(), group.rank()
        rows = output_tensor.view(n, -1)
        if rows[r].data_ptr() != input_tensor.data_ptr():  # FSDP copies its input into the output already
            rows[r].copy_(input_tensor.view(-1))
        for k in range(n - 1):  # pass on the shard received last, receive the one before it
            _exchange(rows[(r - k) % n], rows[(r - k - 1) % n], group)


class RingReduceScatter(_Plain, ReduceScatter):
    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: dist.ProcessGroup,
                 op: object, async_op: bool = False) -> None:
        if op not in (_AVG, _SUM):  # e.g. PREMUL_SUM: gloo's own collective
            dist.reduce_scatter_tensor(output_tensor, input_tensor, op=op, group=group)  # type: ignore[arg-type]
            return
        n, r = group.size(), group.rank()
        rows, out = input_tensor.view(n, -1), output_tensor.view(-1)
        send, recv = rows[(r - 1) % n], torch.empty_like(out)
        for k in range(n - 1):  # receive the partial sum of chunk r-k-2, add this rank's part
            _exchange(send, recv, group)
            chunk = (r - k - 2) % n
            send = torch.add(rows[chunk], recv, out=out if chunk == r else None)
        if op == _AVG:
            out.div_(n)


def use_rings(module: FSDPModule) -> None:
    """Let an FSDP2 unit (fully_shard's result) gather and reduce over rings when it runs on gloo."""
    if dist.get_backend() == "gloo":
        module.set_custom_all_gather(RingAllGather())
        module.set_custom_reduce_scatter(RingReduceScatter())
