"""Pipeline model parallelism: the model's layers are cut into one contiguous stage per rank
(balanced by parameter count) and run with `torch.distributed.pipelining` (GPipe or 1F1B over
`microBatches`). Every rank sees the whole global batch: the first stage feeds inputs, the last
computes the loss. Each stage checkpoints its own layers; the artifact is the stages merged."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from kubeforge_api.trainingjob import Recipe
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from .. import checkpoint
from ..context import ConfigError, JobContext
from ..data import load
from ..models import architecture, build, loss_fn
from ..progress import ProgressReporter
from .common import (
    StepLog,
    World,
    barrier,
    finish,
    global_batch,
    make_optimizer,
    optimizer_from_tensors,
    optimizer_to_tensors,
    schedule,
    seed_all,
    steps_plan,
)


def cut(model: nn.Sequential, stages: int) -> list[tuple[int, int]]:
    """[start, end) layer ranges, one per stage, each holding at least one parameterised layer."""
    sizes = [sum(p.numel() for p in layer.parameters()) for layer in model]
    weighted = [i for i, s in enumerate(sizes) if s]
    if len(weighted) < stages:
        raise ConfigError(f"the model has {len(weighted)} layers with weights; it cannot be cut into {stages} stages")
    total, bounds, acc, k = sum(sizes), [], 0, 0
    for j, i in enumerate(weighted):
        acc += sizes[i]
        remaining_layers, remaining_stages = len(weighted) - j - 1, stages - k - 1
        if k < stages - 1 and (acc >= total * (k + 1) / stages or remaining_layers == remaining_stages):
            bounds.append(weighted[j + 1])  # the next stage starts at the next weighted layer
            k += 1
    starts = [0, *bounds]
    ends = [*bounds, len(model)]
    return list(zip(starts, ends, strict=True))


@dataclass
class Stage:
    """This rank's part of the pipeline: its layers, the schedule that runs them, and their optimizer."""

    module: nn.Sequential
    schedule: Any
    opt: torch.optim.Optimizer
    lr: Any
    offset: int  # index of the stage's first layer in the full model
    world: World

    @property
    def first(self) -> bool:
        return self.world.rank == 0

    @property
    def last(self) -> bool:
        return self.world.rank == self.world.size - 1

    @property
    def name(self) -> str:
        return f"stage{self.world.rank}"


def train(ctx: JobContext, world: World, reporter: ProgressReporter | None) -> dict[str, Any]:
    recipe = ctx.spec.recipe
    assert recipe is not None
    _check(recipe, world)
    seed_all(recipe.seed)
    data = load(recipe, ctx.storage)
    arch = architecture(recipe.model, data, recipe.model_config_)
    steps_per_epoch, total = steps_plan(recipe, data, 1)
    stage = _build(recipe, build(arch), data.task, world, total)
    begin, metrics, resumed_from = _resume(ctx, stage)
    log = StepLog(reporter, ctx, begin, total, recipe.batch_size, steps_per_epoch, resumed_from)
    for step in range(begin, total):
        idx = global_batch(recipe, data, step, steps_per_epoch)
        loss = _step(stage, recipe, data.x_train[idx], data.y_train[idx])
        done = step + 1
        epoch_end = done % steps_per_epoch == 0 or done == total
        if epoch_end:
            metrics = _evaluate(stage.schedule, data, recipe.batch_size, world)
        log.after(done, float(loss), metrics, float(stage.lr.get_last_lr()[0]), epoch_end)
        if done % ctx.spec.checkpoint.interval_steps == 0 and done < total:
            _checkpoint(ctx, stage, done, metrics)
            log.checkpointed(done)
    state = _merge(ctx, world, stage.module, stage.offset)
    final = reporter.final() if reporter else {}
    info = finish(ctx, world, state, arch, data, metrics, {**final, "phase": "finished"}) if state else None
    barrier(world)
    return {"metrics": metrics, "artifact": info, "steps": total, "resumedFrom": resumed_from}


def _check(recipe: Recipe, world: World) -> None:
    if world.size < 2:
        raise ConfigError("strategy pipeline needs at least 2 ranks")
    if recipe.batch_size % recipe.micro_batches:
        raise ConfigError(
            f"recipe.batchSize={recipe.batch_size} must be divisible by microBatches={recipe.micro_batches}")


def _build(recipe: Recipe, full: nn.Sequential, task: str, world: World, total: int) -> Stage:
    """Cut the full model, keep this rank's layers and wrap them in the recipe's schedule."""
    start_layer, end_layer = cut(full, world.size)[world.rank]
    module = nn.Sequential(*list(full)[start_layer:end_layer])
    pp_stage = PipelineStage(module, world.rank, world.size, torch.device("cpu"))
    kind = ScheduleGPipe if recipe.pipeline_schedule == "gpipe" else Schedule1F1B
    sched_pp = kind(pp_stage, n_microbatches=recipe.micro_batches, loss_fn=lambda out, y: loss_fn(task, out, y))
    opt = make_optimizer(recipe, module.parameters())
    lr = torch.optim.lr_scheduler.LambdaLR(opt, schedule(recipe, total))
    return Stage(module, sched_pp, opt, lr, start_layer, world)


def _resume(ctx: JobContext, stage: Stage) -> tuple[int, dict[str, float], int | None]:
    """(first step, metrics, step resumed from) after loading this stage's part of the latest checkpoint."""
    resumed = checkpoint.latest(ctx.storage / "checkpoints")
    if resumed is None:
        return 0, {}, None
    mine = stage.name
    stage.module.load_state_dict(resumed.tensors[f"model-{mine}"])
    optimizer_from_tensors(stage.opt, resumed.tensors.get(f"optim-{mine}", {}), resumed.meta[f"optimizer-{mine}"])
    stage.lr.load_state_dict(resumed.meta["scheduler"])
    checkpoint.set_rng_state(resumed.tensors["rng"], resumed.meta["rng"])
    return resumed.step, resumed.meta.get("metrics", {}), resumed.step


def _step(stage: Stage, recipe: Recipe, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimizer step of the whole pipeline; returns the mean loss (computed by the last stage,
    broadcast to all)."""
    losses: list[torch.Tensor] = []
    if stage.first:
        stage.schedule.step(x)
    elif stage.last:
        stage.schedule.step(target=y, losses=losses)
    else:
        stage.schedule.step()
    _clip(stage.module, recipe.grad_clip)
    stage.opt.step()
    stage.lr.step()
    stage.opt.zero_grad(set_to_none=True)
    loss = torch.stack(losses).mean() if stage.last else torch.zeros(())
    dist.broadcast(loss, src=stage.world.size - 1)
    return loss


def _checkpoint(ctx: JobContext, stage: Stage, done: int, metrics: dict[str, float]) -> None:
    """Each stage writes its own layers and optimizer state; rank 0 commits them as one checkpoint."""
    ckpt_dir, world, mine = ctx.storage / "checkpoints", stage.world, stage.name
    staging = checkpoint.staging(ckpt_dir, done, create=stage.first)
    barrier(world)
    opt_t, opt_meta = optimizer_to_tensors(stage.opt)
    checkpoint.write_tensors(staging, f"model-{mine}", stage.module.state_dict())
    checkpoint.write_tensors(staging, f"optim-{mine}", opt_t)
    (staging / f"optimizer-{mine}.json").write_text(json.dumps(opt_meta))
    barrier(world)
    if stage.first:
        metas = {f"optimizer-stage{r}": json.loads((staging / f"optimizer-stage{r}.json").read_text())
                 for r in range(world.size)}
        for r in range(world.size):
            (staging / f"optimizer-stage{r}.json").unlink()
        rng_t, rng_meta = checkpoint.rng_state()
        checkpoint.commit(ckpt_dir, staging, done, {"rng": rng_t},
                          {"step": done, "scheduler": stage.lr.state_dict(), "rng": rng_meta, "metrics": metrics,
                           **metas}, ctx.spec.checkpoint.keep)
    barrier(world)


def _clip(module: nn.Module, max_norm: float) -> None:
    """Clip by the norm over all stages' gradients, as the unsplit model would."""
    if not max_norm:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    sq = torch.stack([g.pow(2).sum() for g in grads]).sum() if grads else torch.zeros(())
    dist.all_reduce(sq)
    scale = max_norm / (float(sq.sqrt()) + 1e-6)
    if scale < 1:
        for g in grads:
            g.mul_(scale)


@torch.no_grad()
def _evaluate(sched_pp: Any, data: Any, batch: int, world: World) -> dict[str, float]:
    totals = torch.zeros(3)  # loss sum, correct, count
    for i in range(0, len(data.x_eval) - batch + 1, batch):
        x, y = data.x_eval[i : i + batch], data.y_eval[i : i + batch]
        if world.rank == 0:
            sched_pp.eval(x)
        elif world.rank == world.size - 1:
            out = sched_pp.eval(target=y, losses=[])
            totals[0] += float(loss_fn(data.task, out, y)) * len(x)
            if data.task == "classify":
                totals[1] += int((out.argmax(-1) == y).sum())
            totals[2] += len(x)
        else:
            sched_pp.eval()
    dist.broadcast(totals, src=world.size - 1)
    loss = float(totals[0] / max(float(totals[2]), 1.0))
    if data.task == "classify":
        return {"evalLoss": loss, "accuracy": float(totals[1] / max(float(totals[2]), 1.0))}
    return {"evalLoss": loss, "perplexity": math.exp(min(loss, 50.0))}


def _merge(ctx: JobContext, world: World, module: nn.Module, offset: int) -> dict[str, torch.Tensor]:
    """Every stage writes its layers under the full model's names; rank 0 merges them."""
    parts = ctx.storage / "artifact-parts"
    if world.rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
    barrier(world)
    renamed = {}
    for k, v in module.state_dict().items():
        local, _, rest = k.partition(".")
        renamed[f"{int(local) + offset}.{rest}"] = v.detach().contiguous()
    save_file(renamed, str(parts / f"stage-{world.rank}.safetensors"))
    barrier(world)
    if world.rank != 0:
        return {}
    state: dict[str, torch.Tensor] = {}
    for r in range(world.size):
        state.update(load_file(str(parts / f"stage-{r}.safetensors")))
    for f in parts.iterdir():
        f.unlink()
    parts.rmdir()
    return state
