"""Pieces every strategy shares: the process group, the deterministic data order, the learning-rate
schedule, optimizer state as plain tensors + JSON (for pickle-free checkpoints), evaluation and the
final artifact/termination message."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from kubeforge_api.contracts import MAX_HISTORY_POINTS, TrainingResult
from kubeforge_api.model import TERMINATION_LIMIT
from kubeforge_api.trainingjob import Recipe
from torch import nn

from .. import artifacts
from ..context import ConfigError, JobContext
from ..data import Data
from ..models import loss_fn
from ..progress import ProgressReporter
from ..rate import SmoothedRate
from ..termination import termination_log
from .cpus import threads_per_rank


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(backend: str) -> World:
    """Join the torchrun process group (or run alone when not under torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend)
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def threads_for() -> int:
    """Split the CPUs this container may use (cgroup quota, affinity, the operator's limit; not the
    node's cores) between the local ranks (torchrun would default to 1 thread each); returns the count."""
    threads = threads_per_rank()
    torch.set_num_threads(threads)
    return int(torch.get_num_threads())


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The seeded permutation of one epoch, computed once per epoch instead of once per step
    (a 65k-sample randperm costs more than a whole ~1 ms step). Callers only slice it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def global_batch(recipe: Recipe, data: Data, step: int, steps_per_epoch: int) -> torch.Tensor:
    """Indices of the global batch for `step`: a seeded permutation per epoch, cut into batches.
    Every rank computes the same list and takes its slice, so any world size sees the same data."""
    epoch, i = divmod(step, steps_per_epoch)
    return _epoch_order(recipe.seed, epoch, len(data.x_train))[i * recipe.batch_size : (i + 1) * recipe.batch_size]


def shard(indices: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    per = len(indices) // size
    return indices[rank * per : (rank + 1) * per]


def schedule(recipe: Recipe, total_steps: int) -> Any:
    def factor(step: int) -> float:
        if recipe.warmup_steps and step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = min(1.0, (step - recipe.warmup_steps) / max(1, total_steps - recipe.warmup_steps))
        if recipe.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if recipe.lr_schedule == "linear":
            return 1.0 - progress
        return 1.0

    return factor


def make_optimizer(recipe: Recipe, params: Any) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.learning_rate, momentum=0.9)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.learning_rate)
    return torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=0.01)


def steps_plan(recipe: Recipe, data: Data, world_size: int, elastic: bool = False) -> tuple[int, int]:
    """(steps per epoch, total steps); the global batch must split evenly over ranks and micro-batches
    (elastic: the world size changes, so it need only give each rank a sample per micro-batch)."""
    per_rank, rem = divmod(recipe.batch_size, world_size)
    if elastic and per_rank < recipe.gradient_accumulation:
        raise ConfigError(f"recipe.batchSize={recipe.batch_size} is too small for {world_size} ranks "
                          f"x gradientAccumulation={recipe.gradient_accumulation}")
    if not elastic and (rem or per_rank % recipe.gradient_accumulation):
        raise ConfigError(f"recipe.batchSize={recipe.batch_size} must be divisible by the {world_size} ranks "
                          f"x gradientAccumulation={recipe.gradient_accumulation}")
    steps_per_epoch = len(data.x_train) // recipe.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"recipe.batchSize={recipe.batch_size} exceeds the {len(data.x_train)} training samples")
    total = steps_per_epoch * recipe.epochs
    return steps_per_epoch, min(total, recipe.max_steps) if recipe.max_steps else total


def autocast(recipe: Recipe) -> Any:
    if recipe.precision == "bf16":
        return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
    return nullcontext()


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as flat tensors plus JSON-able leftovers (never pickled). FSDP's optimizer
    holds plain local shards (see shards.py), so its state is saved per rank as it is."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            name = f"{idx}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value
            else:
                scalars[name] = value
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, recipe: Recipe, device: torch.device | None = None,
             batch: int = 512) -> dict[str, float]:
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for i in range(0, len(data.x_eval), batch):
        x, y = data.x_eval[i : i + batch], data.y_eval[i : i + batch]
        if device is not None:
            x, y = x.to(device), y.to(device)
        with autocast(recipe):
            logits = model(x)
        total_loss += float(loss_fn(data.task, logits, y)) * len(x)
        if data.task == "classify":
            correct += int((logits.argmax(-1) == y).sum())
        count += len(x)
    model.train()
    loss = total_loss / count
    if data.task == "classify":
        return {"evalLoss": loss, "accuracy": correct / count}
    return {"evalLoss": loss, "perplexity": math.exp(min(loss, 50.0))}


def micro_batches(x: torch.Tensor, y: torch.Tensor, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    yield from zip(torch.tensor_split(x, n), torch.tensor_split(y, n), strict=True)


def say(line: str) -> None:
    """One line of rank 0's log (`kubectl logs`): what a user watches while the job trains."""
    print(f"kubeforge: {line}", flush=True)


class StepLog:
    """Rank 0's reporting after each optimizer step: progress, throughput and ETA, plus history
    points every ~1/400 of the run and at each epoch end. A no-op on other ranks. Progress carries
    the smoothed throughput and the ETA from it (see rate.py); history points the measured one."""

    def __init__(self, reporter: ProgressReporter | None, ctx: JobContext, start: int, total: int, batch: int,
                 steps_per_epoch: int, resumed_from: int | None) -> None:
        self.reporter, self.total, self.batch, self.steps_per_epoch = reporter, total, batch, steps_per_epoch
        self.every = max(1, total // 400)
        self.t_last, self.last_done = time.perf_counter(), start
        self.rate = SmoothedRate()
        if reporter:
            reporter.update(total_steps=total, step=start, phase="training", attempt=ctx.attempt,
                            last_checkpoint_step=resumed_from, resumed_from=resumed_from)
            reporter.record("start", step=start, attempt=ctx.attempt, resumedFrom=resumed_from)
            say(f"attempt {ctx.attempt}: resumed from the checkpoint at step {resumed_from}, {total - start} steps "
                "to go" if resumed_from is not None else f"training {total} steps, {steps_per_epoch} per epoch")

    def due(self, done: int, epoch_end: bool) -> bool:
        """Whether step `done` is reported; the same answer on every rank, so callers may run a
        collective (the loss all-reduce) and the float conversions only on these steps."""
        return done % self.every == 0 or epoch_end

    def after(self, done: int, loss: float, metrics: dict[str, float], lr: float | None, epoch_end: bool) -> None:
        if self.reporter is None or not self.due(done, epoch_end):
            return
        now = time.perf_counter()
        seconds, samples = max(now - self.t_last, 1e-9), (done - self.last_done) * self.batch
        rate, smoothed = samples / seconds, self.rate.update(samples, seconds)
        self.t_last, self.last_done = now, done
        epoch = (done - 1) // self.steps_per_epoch
        self.reporter.update(step=done, epoch=epoch, loss=loss, samples_per_second=smoothed, eval=metrics,
                             eta_seconds=self.rate.eta((self.total - done) * self.batch))
        point = {"lr": lr} if lr is not None else {}
        points = [("train", {"step": done, "loss": loss, "samplesPerSecond": rate, **point})]
        if epoch_end:
            points.append(("eval", {"step": done, "epoch": epoch, **metrics}))
            scores = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            say(f"step {done}/{self.total} epoch {epoch}: loss {loss:.4g} {scores}".rstrip())
        self.reporter.record_all(points)

    def checkpointed(self, step: int) -> None:
        if self.reporter:
            self.reporter.update(last_checkpoint_step=step)
            say(f"checkpoint at step {step}")


def thin(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every other point of the more numerous kind (train or eval), keeping each kind's last: the
    few eval points (one an epoch) are not thinned away with the many train points."""
    by_kind = {k: [p for p in points if p["kind"] == k] for k in ("train", "eval")}
    kind = max(by_kind, key=lambda k: len(by_kind[k]))
    many = by_kind[kind]
    by_kind[kind] = [*many[-2::-2][::-1], many[-1]] if len(many) > 2 else many[1:]
    return sorted(by_kind["train"] + by_kind["eval"], key=lambda p: int(p["step"]))


def termination_message(artifact: dict[str, Any] | None, final: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """The typed result for the pod's termination message (the kubelet keeps 4 KiB): the artifact,
    the final progress and as much of the curve history as fits, thinned evenly per kind, ending
    at the end."""
    points = [p for p in final.get("history", []) if p.get("kind") in ("train", "eval")]
    while True:
        keep = ("kind", "step", "loss", "evalLoss", "accuracy", "perplexity")
        slim = [{k: round(v, 5) if isinstance(v, float) else v for k, v in p.items() if k in keep} for p in points]
        if len(slim) <= MAX_HISTORY_POINTS:
            result = TrainingResult.model_validate({"artifact": artifact, "progress": {**final, "history": slim}})
            message = result.model_dump_json(by_alias=True, exclude_none=True)
            if len(message) <= limit or not points:
                return message
        points = thin(points)


def finish(ctx: JobContext, world: World, state: dict[str, torch.Tensor], arch: dict[str, Any], data: Data,
           metrics: dict[str, float], final: dict[str, Any]) -> dict[str, Any] | None:
    """Rank 0 writes the artifact and the pod's termination message (read by the operator)."""
    if not world.is_main:
        return None
    assert ctx.spec.recipe is not None
    card = {
        "architecture": arch, "metrics": metrics,
        "dataset": {"name": data.name, "digest": data.digest, "trainSamples": len(data.x_train),
                    "evalSamples": len(data.x_eval)},
        "recipe": ctx.spec.recipe.dump(), "strategy": ctx.spec.strategy.value,
        "lineage": {"trainingJob": ctx.name, "namespace": ctx.namespace, "uid": ctx.uid,
                    "generation": ctx.generation, "attempt": ctx.attempt},
    }
    info = artifacts.write(ctx.storage / "artifact", state, card)
    with contextlib.suppress(OSError):  # outside a pod (local runs, tests) there is no termination log
        termination_log().write_text(termination_message(info, final))
    return info
