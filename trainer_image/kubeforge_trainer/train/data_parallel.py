"""Data-parallel training: one process alone, DistributedDataParallel (`ddp`: distributed slices of
each global batch, gradient accumulation under `no_sync`, configurable bucket size) or fully
sharded (`fsdp`: FSDP2 `fully_shard`, each rank checkpoints only its own shards). All three see the
same global batches, so their losses agree with a single process of the same seed."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from kubeforge_api.trainingjob import Recipe, Strategy
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .. import checkpoint
from ..context import JobContext
from ..data import load
from ..models import architecture, build, loss_fn
from ..progress import ProgressReporter
from .common import (
    StepLog,
    World,
    autocast,
    barrier,
    evaluate,
    finish,
    make_optimizer,
    micro_batches,
    optimizer_from_tensors,
    optimizer_to_tensors,
    schedule,
    seed_all,
    steps_plan,
)
from .ring import use_rings
from .sampler import Sampler, loss_weight, rank_slice
from .shards import LocalShards, clip_local
from .stopping import Stopped, StopRequest


def wrap_model(model: nn.Sequential, strategy: Strategy, world: World, bucket_mb: int,
               device: torch.device) -> nn.Module:
    """The model as this strategy trains it: itself alone, DDP, or FSDP2 (bucketed units, then the root)."""
    model = model.to(device)
    if world.size == 1:
        return model
    if strategy == Strategy.FSDP:
        _shard(model, bucket_mb)
        return model
    return DDP(model, bucket_cap_mb=bucket_mb, device_ids=[device.index] if device.type == "cuda" else None)


def _shard(model: nn.Sequential, bucket_mb: int) -> None:
    """FSDP2 in buckets: consecutive layers are grouped into units of at least `bucket_mb` of
    parameters (the knob DDP uses for its gradient buckets), so each unit costs one all-gather and
    one reduce-scatter instead of one per layer (on gloo a collective's fixed cost dominates small
    layers); the layers left over join the root unit, which keeps its parameters gathered from
    forward to backward (backward needs them at once). Parameters are still sharded one by one
    (dim 0), so checkpoints do not depend on the grouping. Large models keep many units and the
    memory saving of resharding after each unit's forward. On gloo, units gather and reduce over
    rings of point-to-point exchanges (see ring.py)."""
    from torch.distributed.fsdp import fully_shard

    unit: list[nn.Module] = []
    size = 0
    for layer in model:
        nbytes = sum(p.numel() * p.element_size() for p in layer.parameters())
        if nbytes == 0:
            continue
        unit.append(layer)
        size += nbytes
        if size >= bucket_mb * 2**20:
            use_rings(fully_shard(unit)[0])
            unit, size = [], 0
    use_rings(fully_shard(model, reshard_after_forward=False))


def _model_tensors(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    if sharded:
        return {k: v.to_local() if hasattr(v, "to_local") else v for k, v in sd.items()}
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_model(model: nn.Module, tensors: dict[str, torch.Tensor], sharded: bool) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            src = tensors[k.removeprefix("module.")]
            (v.to_local() if sharded and hasattr(v, "to_local") else v).copy_(src)


def _full_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v for k, v in full.items() if isinstance(v, torch.Tensor)}
    return _model_tensors(model, False)


def train(ctx: JobContext, world: World, reporter: ProgressReporter | None) -> dict[str, Any]:
    recipe = ctx.spec.recipe
    assert recipe is not None
    strategy = ctx.spec.strategy
    sharded = strategy == Strategy.FSDP and world.size > 1
    seed_all(recipe.seed)
    data = load(recipe, ctx.storage)
    arch = architecture(recipe.model, data, recipe.model_config_)
    device = torch.device(f"cuda:{world.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = wrap_model(build(arch), strategy, world, recipe.bucket_cap_mb, device)
    shards = LocalShards(model.parameters()) if sharded else None  # the step runs on local shards
    opt = make_optimizer(recipe, shards.tensors if shards else model.parameters())
    steps_per_epoch, total = steps_plan(recipe, data, world.size, elastic=ctx.spec.elastic is not None)
    order = Sampler(recipe.seed, len(data.x_train), recipe.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(recipe, total))
    resumed = _resume(ctx, world, model, opt, sched, sharded)
    start, metrics = (resumed.step, resumed.meta.get("metrics", {})) if resumed else (0, {})
    offset = int(resumed.meta.get("sampleOffset", order.offset_at(start))) if resumed else 0
    log = StepLog(reporter, ctx, start, total, recipe.batch_size, steps_per_epoch, resumed.step if resumed else None)
    model.train()
    stop = StopRequest(world)
    for step in range(start, total):
        global_batch = order.global_batch(offset)
        offset += len(global_batch)
        batch = rank_slice(global_batch, world.rank, world.size)
        x, y = data.x_train[batch], data.y_train[batch]
        if device.type != "cpu":
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        weight = loss_weight(len(batch), len(global_batch), world.size)
        loss = _step(model, opt, recipe, data.task, x, y, shards, weight)
        sched.step()
        done = step + 1
        epoch_end = done % steps_per_epoch == 0 or done == total
        if epoch_end:
            metrics = evaluate(model, data, recipe, device)
        if log.due(done, epoch_end):  # the same steps on every rank: the loss all-reduce is collective
            if world.size > 1:
                torch.distributed.all_reduce(loss, op=torch.distributed.ReduceOp.AVG)
            log.after(done, float(loss), metrics, float(sched.get_last_lr()[0]), epoch_end)
        stopping = done < total and stop.agreed()  # on SIGTERM: checkpoint this step, then stop
        if (done % ctx.spec.checkpoint.interval_steps == 0 or stopping) and done < total:
            _checkpoint(ctx, world, model, opt, sched, (done, offset), metrics, sharded)
            log.checkpointed(done)
        if stopping:
            raise Stopped(done)
    stop.settle()
    final = reporter.final() if reporter else {}
    state = _full_state(model, sharded)
    info = finish(ctx, world, state, arch, data, metrics, {**final, "phase": "finished"})
    if reporter:
        reporter.update(phase="finished")
    barrier(world)
    return {"metrics": metrics, "artifact": info, "steps": total, "resumedFrom": resumed.step if resumed else None}


def _resume(ctx: JobContext, world: World, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
            sharded: bool) -> checkpoint.Loaded | None:
    """Load the newest accepted checkpoint into the model, optimizer, schedule and RNG, if there is one."""
    resumed = checkpoint.latest(ctx.storage / "checkpoints")
    if resumed is not None:
        suffix = f"-rank{world.rank}" if sharded else ""
        _load_model(model, resumed.tensors[f"model{suffix}"], sharded)
        optimizer_from_tensors(opt, resumed.tensors.get(f"optim{suffix}", {}), resumed.meta["optimizer"])
        sched.load_state_dict(resumed.meta["scheduler"])
        checkpoint.set_rng_state(resumed.tensors["rng"], resumed.meta["rng"])
    return resumed


def _step(model: nn.Module, opt: torch.optim.Optimizer, recipe: Recipe, task: str, x: torch.Tensor, y: torch.Tensor,
          shards: LocalShards | None, weight: float = 1.0) -> torch.Tensor:
    """One optimizer step over the rank's slice (in micro-batches, syncing gradients only on the
    last); returns the detached mean loss. The common single micro-batch takes the shortest path:
    at ~1 ms steps every extra tensor op is visible in throughput. FSDP's clipping and step run on
    the local shards (see shards.py). `weight` scales a slice of uneven size (see sampler.py)."""
    n_micro = recipe.gradient_accumulation
    if n_micro == 1:
        with autocast(recipe):
            loss = loss_fn(task, model(x), y)
            if weight != 1.0:
                loss = loss * weight
        loss.backward()  # type: ignore[no-untyped-call]
        loss_sum = loss.detach()
    else:
        loss_sum = torch.zeros((), device=x.device)
        for i, (mx, my) in enumerate(micro_batches(x, y, n_micro)):
            sync = i == n_micro - 1
            ctx_sync = model.no_sync() if isinstance(model, DDP) and not sync else nullcontext()
            if shards:
                model.set_requires_gradient_sync(sync)  # type: ignore[operator]
            with ctx_sync, autocast(recipe):
                loss = loss_fn(task, model(mx), my) * (weight / n_micro)
            loss.backward()  # type: ignore[no-untyped-call]
            loss_sum += loss.detach()
    if shards:
        grads = shards.take_grads()
        if recipe.grad_clip:
            clip_local(grads, recipe.grad_clip)
    elif recipe.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum


def _checkpoint(ctx: JobContext, world: World, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                position: tuple[int, int], metrics: dict[str, float], sharded: bool) -> None:
    """Rank 0 (each rank its shards, when sharded) saves; `position` is (step, global sample offset)."""
    step, offset = position
    ckpt_dir = ctx.storage / "checkpoints"
    model_t = _model_tensors(model, sharded)
    opt_t, opt_meta = optimizer_to_tensors(opt)
    rng_t, rng_meta = checkpoint.rng_state()
    meta = {"step": step, "optimizer": opt_meta, "scheduler": sched.state_dict(), "rng": rng_meta,
            "metrics": metrics, "worldSize": world.size, "sharded": sharded, "sampleOffset": offset}
    if not sharded:
        if world.is_main:
            checkpoint.save(ckpt_dir, step, {"model": model_t, "optim": opt_t, "rng": rng_t}, meta,
                            ctx.spec.checkpoint.keep)
        barrier(world)
        return
    staging = checkpoint.staging(ckpt_dir, step, create=world.is_main)
    barrier(world)
    checkpoint.write_tensors(staging, f"model-rank{world.rank}", model_t)
    checkpoint.write_tensors(staging, f"optim-rank{world.rank}", opt_t)
    barrier(world)
    if world.is_main:
        checkpoint.commit(ckpt_dir, staging, step, {"rng": rng_t}, meta, ctx.spec.checkpoint.keep)
    barrier(world)
