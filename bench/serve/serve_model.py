"""The benchmark model (an MLP 256-2048-2048-10 built by the trainer's own builder and written as a
real artifact) and its int8 variant (torch dynamic quantization of the Linear layers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from kubeforge_trainer import artifacts
from kubeforge_trainer.models import build

ARCH = {"model": "mlp", "inputDim": 256, "hidden": 2048, "layers": 2, "numClasses": 10}


def write(directory: Path) -> Path:
    torch.manual_seed(0)
    artifacts.write(directory, build(ARCH).state_dict(), {"architecture": ARCH, "metrics": {}})
    return directory


def quantize(model: torch.nn.Module) -> torch.nn.Module:
    q: torch.nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        model, {torch.nn.Linear}, dtype=torch.qint8)
    return q


def load(directory: Path, int8: bool = False) -> torch.nn.Module:
    _, model = artifacts.load_model(directory)
    return quantize(model) if int8 else model


def load_int8(directory: Path) -> tuple[dict[str, Any], torch.nn.Module]:
    """A loader for kubeforge_server: the one artifact loader, then dynamic int8 quantization."""
    card, model = artifacts.load_model(directory)
    return card, quantize(model)
