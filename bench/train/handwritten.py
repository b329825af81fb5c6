"""The baseline: a hand-written PyTorch training loop (optionally DDP under torchrun) on the same
model, data order, optimizer and threads as the trainer, with no checkpoints, progress server or
history. Prints one JSON line: wall-clock times (comparable with the trainer's history) and losses
at the logged steps."""

from __future__ import annotations

import json
import os
import time

import torch
import torch.distributed as dist
from kubeforge_api.trainingjob import TrainingJobSpec
from kubeforge_trainer.data import load
from kubeforge_trainer.models import architecture, build, loss_fn
from kubeforge_trainer.train.common import global_batch, make_optimizer, schedule, seed_all, shard, steps_plan
from kubeforge_trainer.train.cpus import threads_per_rank
from kubeforge_trainer.train.teardown import exit_now
from torch.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    spec = TrainingJobSpec.model_validate(json.loads(os.environ["KUBEFORGE_SPEC"]))
    recipe = spec.recipe
    assert recipe is not None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.set_num_threads(threads_per_rank())  # the same count as the trainer
    seed_all(recipe.seed)
    data = load(recipe, os.environ.get("KUBEFORGE_STORAGE_DIR", "."))  # type: ignore[arg-type]
    model: torch.nn.Module = build(architecture(recipe.model, data, recipe.model_config_))
    if world > 1:
        model = DDP(model, bucket_cap_mb=recipe.bucket_cap_mb)
    opt = make_optimizer(recipe, model.parameters())
    steps_per_epoch, total = steps_plan(recipe, data, world)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(recipe, total))
    log_every = max(1, total // 400)
    times, losses = [], []
    for step in range(total):
        idx = shard(global_batch(recipe, data, step, steps_per_epoch), rank, world)
        loss = loss_fn(data.task, model(data.x_train[idx]), data.y_train[idx])
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if world > 1:
            loss = loss.detach()
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        if (step + 1) % log_every == 0:
            times.append(time.time())
            losses.append(float(loss))
    if rank == 0:
        print(json.dumps({"times": times, "losses": losses, "logEvery": log_every}), flush=True)
    if world > 1:  # the trainer's teardown (see kubeforge_trainer/train/teardown.py): never a SIGABRT at exit
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    exit_now(0)
