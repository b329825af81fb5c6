"""Pruning. Structured pruning removes whole hidden units of an MLP, output channels of a CNN's
convolutions, and FFN units and attention heads of a GPT block, slicing the producing layer's rows and the consuming
layer's columns so every layer really shrinks; the new shapes go into the model card
(`architecture.shapes`) and the loader rebuilds them (`variants.shapes`). We track dependencies ourselves instead
of using a graph tracer (Torch-Pruning) because our families are few and fixed, their coupled layers are
known by construction, and the loader must rebuild the pruned model from the card alone.
Unstructured pruning zeroes the smallest weights (dense storage: no speed-up is claimed)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.utils.prune as tprune
from kubeforge_api.trainingjob import Recipe
from torch import nn

from ..data import Data
from ..models import loss_fn
from ..train.common import make_optimizer, seed_all
from ..variants.shapes import replace, resize


@dataclass(frozen=True)
class Group:
    """Units of `producer` (rows; conv output channels) that feed `consumer` (columns, `repeat`
    consecutive columns per unit after a Flatten)."""

    producer: str
    consumer: str
    repeat: int = 1


def groups(arch: dict[str, Any], model: nn.Module) -> list[Group]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if arch["model"] == "mlp":
        return [Group(a, b) for a, b in itertools.pairwise(names)]
    if arch["model"] == "cnn":
        _, h, w = arch["imageShape"]
        return [Group(names[0], names[1]), Group(names[1], names[2], repeat=h * w)]
    if arch["model"] == "gpt":
        return [Group(n, n[:-1] + "2") for n in names if n.endswith(".mlp.0")]
    raise ValueError(f"no pruning groups for model {arch['model']!r}")


def _copy(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    assert isinstance(module, nn.Linear | nn.Conv2d)
    module.weight.copy_(weight)
    if bias is not None and module.bias is not None:
        module.bias.copy_(bias)


def _keep(scores: torch.Tensor, amount: float) -> torch.Tensor:
    """Indices (sorted) of the (1 - amount) largest scores, at least one."""
    return scores.topk(max(1, round(len(scores) * (1 - amount)))).indices.sort().values


@torch.no_grad()
def prune_heads(block: nn.Module, amount: float) -> None:
    """Remove the `amount` attention heads of a GPT `Block` with the smallest L2 norm over their
    q, k, v rows and output-projection columns: `qkv` loses 3 x head_dim rows and `proj` head_dim
    columns per head, so attention really shrinks (the block derives its head count from `qkv`)."""
    qkv, proj, hd = block.qkv, block.proj, getattr(block, "head_dim", 0)
    assert isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(hd, int)
    inner = qkv.out_features // 3
    w = qkv.weight.reshape(3, inner // hd, hd, -1)
    scores = w.pow(2).sum(dim=(0, 2, 3)) + proj.weight.reshape(proj.out_features, -1, hd).pow(2).sum(dim=(0, 2))
    keep = _keep(scores, amount)
    rows = (keep[:, None] * hd + torch.arange(hd)).reshape(-1)
    qkv_rows = torch.cat([rows + part * inner for part in range(3)])
    new_qkv, new_proj = resize(qkv, len(qkv_rows), qkv.in_features), resize(proj, proj.out_features, len(rows))
    _copy(new_qkv, qkv.weight[qkv_rows], None if qkv.bias is None else qkv.bias[qkv_rows])
    _copy(new_proj, proj.weight[:, rows], proj.bias)
    block.qkv, block.proj = new_qkv, new_proj


def structured(model: nn.Module, arch: dict[str, Any], amount: float,
               parts: tuple[str, ...] = ("units", "heads")) -> dict[str, list[int]]:
    """Keep the (1 - amount) units with the largest L2 norm in every group (`units`: neurons,
    channels, FFN units) and, in a GPT, the (1 - amount) strongest heads of every block (`heads`);
    returns the new shapes of every layer it changed."""
    shapes: dict[str, list[int]] = {}
    changed: list[str] = []
    if "heads" in parts and arch["model"] == "gpt":
        for name, block in model.named_modules():
            if hasattr(block, "head_dim"):
                prune_heads(block, amount)
                changed += [f"{name}.qkv", f"{name}.proj"]
    with torch.no_grad():
        for g in groups(arch, model) if "units" in parts else []:
            prod, cons = model.get_submodule(g.producer), model.get_submodule(g.consumer)
            assert isinstance(prod, nn.Linear | nn.Conv2d) and isinstance(cons, nn.Linear | nn.Conv2d)
            units = prod.weight.shape[0]
            keep = _keep(prod.weight.reshape(units, -1).norm(dim=1), amount)
            keep_n = len(keep)
            cols = (keep[:, None] * g.repeat + torch.arange(g.repeat)).reshape(-1)
            new_p = resize(prod, keep_n, prod.weight.shape[1])
            _copy(new_p, prod.weight[keep], None if prod.bias is None else prod.bias[keep])
            new_c = resize(cons, cons.weight.shape[0], len(cols) if isinstance(cons, nn.Linear) else keep_n)
            _copy(new_c, cons.weight[:, cols] if isinstance(cons, nn.Linear) else cons.weight[:, keep], cons.bias)
            replace(model, g.producer, new_p)
            replace(model, g.consumer, new_c)
            changed += [g.producer, g.consumer]
    for name in changed:
        shapes[name] = list(model.get_submodule(name).weight.shape)  # type: ignore[arg-type]
    return shapes


def unstructured(model: nn.Module, amount: float) -> list[tuple[nn.Module, str]]:
    """Zero the `amount` smallest-magnitude weights of every Linear/Conv layer (a mask that stays
    during fine-tuning; `fold` makes it permanent)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    params: list[tuple[nn.Module, str]] = [(m, "weight") for m in layers]
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    return params


def fold(params: list[tuple[nn.Module, str]]) -> None:
    for module, name in params:
        tprune.remove(module, name)  # type: ignore[no-untyped-call]


def sparsity(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(1, total)


def fine_tune(model: nn.Module, data: Data, recipe: Recipe, steps: int, lr_scale: float = 0.3) -> None:
    """A short training run on the training split with the recipe's optimizer and a reduced rate."""
    if steps <= 0:
        return
    seed_all(recipe.seed + 17)
    opt = make_optimizer(recipe.model_copy(update={"learning_rate": recipe.learning_rate * lr_scale}),
                         [p for p in model.parameters() if p.requires_grad])
    model.train()
    batch = min(recipe.batch_size, len(data.x_train))
    for _ in range(steps):
        idx = torch.randint(0, len(data.x_train), (batch,))
        loss = loss_fn(data.task, model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    model.eval()
