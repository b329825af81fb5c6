"""One rank of the ring check (run under torchrun): the trainer's ring all-gather and
reduce-scatter against gloo's own collectives, for uneven rows and both reduce ops."""

from __future__ import annotations

import torch
import torch.distributed as dist
from kubeforge_trainer.train.ring import RingAllGather, RingReduceScatter


def main() -> None:
    dist.init_process_group("gloo")
    rank, n, group = dist.get_rank(), dist.get_world_size(), dist.group.WORLD
    assert group is not None
    torch.manual_seed(rank)
    for numel in (n, n * 7, n * 4099):
        full = torch.randn(numel)
        for op in (dist.ReduceOp.AVG, dist.ReduceOp.SUM):
            ref, out = torch.empty(numel // n), torch.empty(numel // n)
            dist.reduce_scatter_tensor(ref, full.clone(), op=op)
            RingReduceScatter()(out, full.clone(), group, op)
            assert torch.allclose(ref, out, rtol=1e-6, atol=1e-6), (numel, op, float((ref - out).abs().max()))
        shard = torch.randn(numel // n)
        ref, out = torch.empty(numel), torch.empty(numel)
        dist.all_gather_into_tensor(ref, shard)
        RingAllGather()(out, shard, group)
        assert torch.equal(ref, out)
        out.zero_().view(n, -1)[rank].copy_(shard)  # FSDP's layout: the input is the output's own row
        RingAllGather()(out, out.view(n, -1)[rank], group)
        assert torch.equal(ref, out)
    dist.barrier()
    print(f"ring ok rank {rank} of {n}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
