"""Checkpoints of a fine-tune, in the trainer's pickle-free format (safetensors + JSON, atomic, verified
on load; see checkpoint.py): the trainable weights (only the adapters for LoRA), the optimizer state
and the scheduler, gathered to full tensors by torch's distributed state-dict helpers, so a checkpoint
does not depend on the strategy or the world size that wrote it. The data position is the step (see
batches.py) and the random state a function of it (see loop.py); the meta also records what the
position means (data digest, global batch), and a resume under a different meaning is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from .. import checkpoint
from ..checkpoint import CheckpointError
from ..train.common import World, barrier

FORMAT = "kubeforge-finetune/v1"
SEP = "::"  # between a parameter's name and its optimizer state's name


def _options(lora: bool, cpu_offload: bool = False, strict: bool = True) -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, ignore_frozen_params=lora, cpu_offload=cpu_offload, strict=strict)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): copies of the repeats."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def save(root: Path, world: World, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
         meta: dict[str, Any], keep: int, lora: bool) -> None:
    """Checkpoint `step` (a collective: every rank calls it; rank 0 writes)."""
    weights: Any
    optim: Any
    weights, optim = get_state_dict(model, optimizer, options=_options(lora, cpu_offload=True))
    if world.is_main:
        state = {f"{name}{SEP}{key}": value for name, entries in optim["state"].items()
                 for key, value in entries.items()}
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        scalars = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        full = {**meta, "format": FORMAT, "step": step, "paramGroups": optim["param_groups"],
                "optimScalars": scalars, "scheduler": scheduler.state_dict()}
        checkpoint.save(root, step, {"model": _unshared(weights), "optim": tensors}, full, keep)
    barrier(world)


def newest_step(root: Path, world: World) -> tuple[int, int] | None:
    """The (step, attempt) of the checkpoint to resume from (the newest the fence accepts) as rank 0
    sees it, the same answer on every rank."""
    point = checkpoint.resume_point(root) if world.is_main else None
    stamp = torch.tensor(list(checkpoint.stamp(point)) if point else [-1, -1], dtype=torch.long)
    if world.size > 1:
        dist.broadcast(stamp, 0)
    return (int(stamp[0]), int(stamp[1])) if int(stamp[0]) >= 0 else None


def load(root: Path, world: World, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
         lora: bool) -> dict[str, Any] | None:
    """Restore the newest checkpoint into model, optimizer and scheduler; its meta, or None."""
    found = newest_step(root, world)
    if found is None:
        return None
    step = found[0]
    loaded = checkpoint.load(root / checkpoint.name(*found))
    meta = loaded.meta
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{root}: step {step} is not a fine-tune checkpoint (format {meta.get('format')!r})")
    weights: dict[str, Any] = dict(loaded.tensors.get("model", {}))
    expected = set(get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=lora)))
    if set(weights) != expected:
        raise CheckpointError(f"{root}: step {step} holds other weights than this model trains "
                              f"({len(set(weights) ^ expected)} names differ)")
    entries: dict[str, dict[str, Any]] = {}
    for key, value in [*loaded.tensors.get("optim", {}).items(), *meta["optimScalars"].items()]:
        name, _, field = key.rpartition(SEP)
        entries.setdefault(name, {})[field] = value
    set_state_dict(model, optimizer, model_state_dict=weights,
                   optim_state_dict=cast(Any, {"state": entries, "param_groups": meta["paramGroups"]}),
                   options=_options(lora, strict=not lora))
    scheduler.load_state_dict(meta["scheduler"])
    return meta
