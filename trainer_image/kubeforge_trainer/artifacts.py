"""The trained model as an artifact: `model.safetensors` plus `model-card.json` (architecture,
metrics, dataset, lineage, trainer version). Loading checks the digest and rebuilds the model from
the architecture config; no pickle is ever read."""

from __future__ import annotations

import json
import os
import platform
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.contracts import MODEL_FORMAT as FORMAT
from kubeforge_api.contracts import ModelCard
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from . import __version__
from .checkpoint import sha256_file
from .models import build
from .variants import VariantError, rebuild

WEIGHTS = "model.safetensors"
CARD = "model-card.json"


class ArtifactError(Exception):
    pass


def digest_of(path: Path) -> str:
    return "sha256:" + sha256_file(path)


def write(directory: Path, state: dict[str, torch.Tensor], card: dict[str, Any]) -> dict[str, Any]:
    """Write the artifact atomically; returns {path, digest, sizeBytes} for status.artifact."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS))
    digest = digest_of(tmp / WEIGHTS)
    full = ModelCard.model_validate({
        "format": FORMAT, "weights": {"file": WEIGHTS, "digest": digest},
        "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "trainer": {"version": __version__, "torch": torch.__version__, "python": platform.python_version()},
        **card})
    (tmp / CARD).write_text(json.dumps(full.dump(), indent=2, sort_keys=True))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    size = sum(f.stat().st_size for f in directory.iterdir())
    return {"path": directory.name, "digest": digest, "sizeBytes": size}


def read(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model card, weights) after checking the weights' digest against the card."""
    try:
        text = (directory / CARD).read_text()
    except OSError as e:
        raise ArtifactError(f"{directory}: no readable {CARD} ({e.strerror})") from None
    try:
        card = ModelCard.model_validate_json(text).dump()
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{directory}: not a Kubeforge model card ({where}: {first['msg']})") from None
    name = str((card.get("weights") or {}).get("file", ""))
    weights = directory / name
    if (Path(name).name != name or not name.endswith(".safetensors") or not weights.is_file()
            or digest_of(weights) != card["weights"].get("digest")):
        raise ArtifactError(f"{directory}: weights missing, not safetensors, or digest mismatch")
    try:
        return card, load_file(str(weights))
    except Exception as e:  # safetensors refuses anything else (a pickle renamed, a truncated file)
        raise ArtifactError(f"{directory}: {weights.name} is not a valid safetensors file ({e})") from None


def load_model(directory: Path) -> tuple[dict[str, Any], torch.nn.Module]:
    """The one loader: (model card, model in eval mode) rebuilt from the card's architecture and the
    checked weights. Serving, compression and the dashboard all load through here. Any variant
    (int8 dynamic/static, pruned, distilled) is rebuilt from the card's `compression` block."""
    card, state = read(directory)
    if card.get("compression"):
        try:
            return card, rebuild(card, state)
        except VariantError as e:
            raise ArtifactError(f"{directory}: {e}") from None
    model = build(card["architecture"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{directory}: weights do not fit the architecture ({str(e).splitlines()[0]})") from None
    return card, model.eval()
