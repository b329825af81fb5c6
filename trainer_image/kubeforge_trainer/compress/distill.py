"""Distillation: a smaller student of the teacher's family (fewer layers, narrower) trained on the
training split from the teacher's softened outputs (KL at a temperature) mixed with the labels.
A student of the teacher's width starts from the teacher's own layers (every k-th block, as
DistilBERT does), which makes a short run enough."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from kubeforge_api.compression import Distill
from kubeforge_api.trainingjob import Recipe
from torch import nn

from ..data import Data
from ..models import build, loss_fn
from ..train.common import make_optimizer, seed_all


def student_architecture(teacher: dict[str, Any], spec: Distill) -> dict[str, Any]:
    s = spec.student
    if teacher["model"] == "mlp":
        return {**teacher, "layers": s.depth or max(1, teacher["layers"] // 2), "hidden": s.width or teacher["hidden"]}
    if teacher["model"] == "cnn":
        return {**teacher, "channels": s.width or max(1, teacher["channels"] // 2)}
    dim = s.width or teacher["dim"]
    heads = teacher["heads"] if dim % teacher["heads"] == 0 else 1
    return {**teacher, "layers": s.depth or max(1, teacher["layers"] // 2), "dim": dim, "heads": heads}


def _layer_map(n_teacher: int, n_student: int) -> dict[int, int]:
    """Student layer i starts from teacher layer i * n_teacher // n_student."""
    return {i: i * n_teacher // n_student for i in range(n_student)}


def init_from_teacher(student: nn.Sequential, teacher: nn.Sequential, t_arch: dict[str, Any],
                      s_arch: dict[str, Any]) -> int:
    """Copy every teacher tensor whose (mapped) name and shape match; returns how many were copied."""
    t_state = teacher.state_dict()
    copied = 0
    with torch.no_grad():
        if t_arch["model"] == "gpt":
            mapping = {i + 1: j + 1 for i, j in _layer_map(t_arch["layers"], s_arch["layers"]).items()}
            mapping[0], mapping[s_arch["layers"] + 1] = 0, t_arch["layers"] + 1
        else:
            mapping = {i: i for i in range(len(student))}
            mapping[len(student) - 1] = len(teacher) - 1  # the output layer
        for key, value in student.state_dict().items():
            head, _, rest = key.partition(".")
            source = f"{mapping.get(int(head), -1)}.{rest}"
            if source in t_state and t_state[source].shape == value.shape:
                value.copy_(t_state[source])
                copied += 1
    return copied


def distill(teacher: nn.Module, t_arch: dict[str, Any], spec: Distill, data: Data,
            recipe: Recipe) -> tuple[dict[str, Any], nn.Module]:
    s_arch = student_architecture(t_arch, spec)
    seed_all(recipe.seed + 29)
    student = build(s_arch)
    if isinstance(teacher, nn.Sequential):
        init_from_teacher(student, teacher, t_arch, s_arch)
    teacher.eval()
    opt = make_optimizer(recipe, student.parameters())
    batch, t = min(recipe.batch_size, len(data.x_train)), spec.temperature
    student.train()
    for _ in range(spec.steps):
        idx = torch.randint(0, len(data.x_train), (batch,))
        x, y = data.x_train[idx], data.y_train[idx]
        with torch.no_grad():
            soft = F.softmax(teacher(x) / t, dim=-1)
        logits = student(x)
        kd = F.kl_div(F.log_softmax(logits / t, dim=-1).reshape(-1, logits.shape[-1]),
                      soft.reshape(-1, logits.shape[-1]), reduction="batchmean") * t * t
        loss = spec.alpha * kd + (1 - spec.alpha) * loss_fn(data.task, logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return s_arch, student.eval()
