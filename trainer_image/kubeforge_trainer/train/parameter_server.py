"""Parameter-server training over `torch.distributed` point-to-point messages (gloo or NCCL).

The first `nodes x procsPerNode` ranks are workers, the rest are servers. Each server owns a shard
of the parameters (round-robin by tensor) and its own optimizer. Workers run asynchronously: each
step a worker pulls the current parameters, computes gradients on its slice of the global batch,
and pushes them with the version it pulled. A server applies a gradient only if it is at most
`maxStaleness` versions old (bounded staleness) and counts the ones it drops. Worker 0 reports
progress, evaluates, checkpoints the parameters, and writes the artifact."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .. import checkpoint
from ..context import ConfigError, JobContext
from ..data import Data, load
from ..models import architecture, build, loss_fn
from ..progress import ProgressReporter
from .common import StepLog, World, barrier, evaluate, finish, global_batch, make_optimizer, seed_all, shard, steps_plan

PULL, PUSH, DONE = 1, 2, 3
HEADER_TAG, DATA_TAG = 1, 2


def layout(world: World, workers: int) -> tuple[list[int], list[int]]:
    if not 0 < workers < world.size:
        raise ConfigError(f"parameter-server needs workers and servers; got {workers} workers of {world.size} ranks")
    return list(range(workers)), list(range(workers, world.size))


def owned(params: list[nn.Parameter], servers: list[int], rank: int) -> list[int]:
    """Indices of the parameter tensors server `rank` owns."""
    return [i for i in range(len(params)) if servers[i % len(servers)] == rank]


def train(ctx: JobContext, world: World, reporter: ProgressReporter | None) -> dict[str, Any]:
    recipe = ctx.spec.recipe
    assert recipe is not None
    workers, servers = layout(world, ctx.spec.nodes * ctx.spec.procs_per_node)
    seed_all(recipe.seed)
    data = load(recipe, ctx.storage)
    arch = architecture(recipe.model, data, recipe.model_config_)
    model = build(arch)
    params = list(model.parameters())
    steps_per_epoch, total = steps_plan(recipe, data, len(workers))
    resumed = checkpoint.latest(ctx.storage / "checkpoints")
    if resumed is not None:
        model.load_state_dict(resumed.tensors["model"])
    start = resumed.step if resumed else 0
    if world.rank in servers:
        stats = _serve(model, params, workers, servers, world.rank, recipe, total, start)
        barrier(world)
        for i in owned(params, servers, world.rank):
            dist.send(params[i].data, dst=0, tag=DATA_TAG)
        barrier(world)
        return {"server": world.rank, **stats}
    metrics = _work(ctx, world, model, params, data, workers, servers, start, total, steps_per_epoch, reporter)
    for s in servers:
        dist.send(torch.tensor([DONE, 0]), dst=s, tag=HEADER_TAG)
    barrier(world)
    if world.rank == 0:
        for s in servers:
            for i in owned(params, servers, s):
                dist.recv(params[i].data, src=s, tag=DATA_TAG)
        metrics = evaluate(model, data, recipe)
    final = reporter.final() if reporter else {}
    info = finish(ctx, world, {k: v.detach() for k, v in model.state_dict().items()}, arch, data, metrics,
                  {**final, "eval": metrics, "phase": "finished"})
    barrier(world)
    return {"metrics": metrics, "artifact": info, "steps": total, "resumedFrom": resumed.step if resumed else None}


def _serve(model: nn.Module, params: list[nn.Parameter], workers: list[int], servers: list[int], rank: int,
           recipe: Any, total: int, start: int) -> dict[str, int]:
    mine = owned(params, servers, rank)
    shard_params = [params[i] for i in mine]
    opt = make_optimizer(recipe, shard_params)
    version, applied, dropped, done = start * len(workers), 0, 0, 0
    header = torch.zeros(2, dtype=torch.int64)
    while done < len(workers):
        src = dist.recv(header, tag=HEADER_TAG)
        op, seen = int(header[0]), int(header[1])
        if op == PULL:
            dist.send(torch.tensor([version]), dst=src, tag=DATA_TAG)
            for p in shard_params:
                dist.send(p.data, dst=src, tag=DATA_TAG)
        elif op == PUSH:
            grads = [torch.empty_like(p) for p in shard_params]
            for g in grads:
                dist.recv(g, src=src, tag=DATA_TAG)
            if version - seen <= recipe.max_staleness:
                for p, g in zip(shard_params, grads, strict=True):
                    p.grad = g
                opt.step()
                version += 1
                applied += 1
            else:
                dropped += 1
        elif op == DONE:
            done += 1
    del model
    return {"applied": applied, "dropped": dropped, "version": version, "steps": total}


def _pull(params: list[nn.Parameter], servers: list[int]) -> dict[int, int]:
    versions = {}
    for s in servers:
        dist.send(torch.tensor([PULL, 0]), dst=s, tag=HEADER_TAG)
        v = torch.zeros(1, dtype=torch.int64)
        dist.recv(v, src=s, tag=DATA_TAG)
        versions[s] = int(v)
        for i in owned(params, servers, s):
            dist.recv(params[i].data, src=s, tag=DATA_TAG)
    return versions


def _work(ctx: JobContext, world: World, model: nn.Module, params: list[nn.Parameter], data: Data,
          workers: list[int], servers: list[int], start: int, total: int, steps_per_epoch: int,
          reporter: ProgressReporter | None) -> dict[str, float]:
    recipe = ctx.spec.recipe
    assert recipe is not None
    metrics: dict[str, float] = {}
    log = StepLog(reporter if world.rank == 0 else None, ctx, start, total, recipe.batch_size, steps_per_epoch,
                  start or None)
    for step in range(start, total):
        versions = _pull(params, servers)
        idx = shard(global_batch(recipe, data, step, steps_per_epoch), world.rank, len(workers))
        model.zero_grad(set_to_none=True)
        loss = loss_fn(data.task, model(data.x_train[idx]), data.y_train[idx])
        loss.backward()  # type: ignore[no-untyped-call]
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        for s in servers:
            dist.send(torch.tensor([PUSH, versions[s]]), dst=s, tag=HEADER_TAG)
            for i in owned(params, servers, s):
                grad = params[i].grad
                dist.send(grad if grad is not None else torch.zeros_like(params[i]), dst=s, tag=DATA_TAG)
        done = step + 1
        if world.rank != 0:
            continue
        epoch_end = done % steps_per_epoch == 0 or done == total
        if epoch_end:
            metrics = evaluate(model, data, recipe)
        log.after(done, float(loss.detach()), metrics, None, epoch_end)
        if done % ctx.spec.checkpoint.interval_steps == 0 and done < total:
            checkpoint.save(ctx.storage / "checkpoints", done, {"model": {k: v.detach() for k, v in
                                                                            model.state_dict().items()}},
                            {"step": done, "metrics": metrics}, ctx.spec.checkpoint.keep)
            log.checkpointed(done)
    return metrics
