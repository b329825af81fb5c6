"""The trained model as an artifact: `model.safetensors` plus `model-card.json` (architecture,
metrics, dataset, lineage, trainer version). Loading checks the weights' digest against the card,
then the shapes the card implies against the safetensors header before anything of the model's size
is allocated (the structure is built on the meta device), and rebuilds the model from the
architecture config; no pickle is ever read."""

from __future__ import annotations

import json
import math
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
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from . import __version__, checkpoint
from .checkpoint import sha256_file
from .models import build
from .variants import VariantError, fp32_structure, rebuild

WEIGHTS = "model.safetensors"
CARD = "model-card.json"
# A compressed variant stores at least one byte per parameter of its fp32 structure (int8 weights,
# fp32 everything else); twice that leaves room for a 4-bit encoding, plus a margin for tiny models.
STORED_BYTES_PER_PARAMETER = 0.5
PARAMETER_MARGIN = 4096
Header = dict[str, tuple[int, ...]]  # tensor name -> shape, as the safetensors header states them


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
    checkpoint.check_fence(directory.parent / "checkpoints", checkpoint.my_attempt())  # old attempts publish nothing
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    size = sum(f.stat().st_size for f in directory.iterdir())
    return {"path": directory.name, "digest": digest, "sizeBytes": size}


def check_current(directory: Path) -> None:
    """Raise `ArtifactError` when the artifact in `directory` was written by an attempt (or job) other
    than the one the fence of its storage records; an artifact or storage without stamps passes."""
    fence = checkpoint.read_fence(directory.parent / "checkpoints")
    try:
        lineage = json.loads((directory / CARD).read_text()).get("lineage") or {}
        attempt, job = lineage.get("attempt"), lineage.get("uid")
    except (OSError, ValueError, AttributeError):
        return  # not a Kubeforge card (a fine-tune's export): its writer's fence check is the gate
    if fence is None or attempt is None:
        return
    if int(attempt) != fence.attempt or (job and fence.job and job != fence.job):
        raise ArtifactError(f"{directory.name}/ was written by attempt {attempt} of job {job or '-'}, but attempt "
                            f"{fence.attempt} of job {fence.job or '-'} is the current one: an old attempt's "
                            f"artifact is never published")


def read(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model card, weights) after checking the weights' digest against the card and the card's
    implied shapes against the safetensors header."""
    card = _card(directory)
    weights = _weights(directory, card)
    try:
        with safe_open(str(weights), framework="pt") as f:
            header: Header = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors refuses anything else (a pickle renamed, a truncated file)
        raise ArtifactError(f"{directory}: {weights.name} is not a valid safetensors file ({e})") from None
    check_shapes(directory, card, header, weights.stat().st_size)
    try:
        return card, load_file(str(weights))
    except Exception as e:
        raise ArtifactError(f"{directory}: {weights.name} is not a valid safetensors file ({e})") from None


def _card(directory: Path) -> dict[str, Any]:
    try:
        text = (directory / CARD).read_text()
    except OSError as e:
        raise ArtifactError(f"{directory}: no readable {CARD} ({e.strerror})") from None
    try:
        return ModelCard.model_validate_json(text).dump()
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ArtifactError(f"{directory}: not a Kubeforge model card ({where}: {first['msg']})") from None


def _weights(directory: Path, card: dict[str, Any]) -> Path:
    name = str((card.get("weights") or {}).get("file", ""))
    weights = directory / name
    if Path(name).name != name or not name.endswith(".safetensors") or not weights.is_file():
        raise ArtifactError(f"{directory}: weights missing, not safetensors, or digest mismatch")
    if digest_of(weights) != card["weights"].get("digest"):
        raise ArtifactError(f"{directory}: weights missing, not safetensors, or digest mismatch")
    return weights


def check_shapes(directory: Path, card: dict[str, Any], header: Header, size: int) -> None:
    """Refuse a card whose architecture does not describe the weights file, before the model is built:
    an fp32 model's tensors must be exactly the header's; a compressed variant's fp32 structure may not
    hold more parameters than its file could store. The structure is built on the meta device."""
    arch = card["architecture"]
    layers = arch.get("layers", 0)
    if not isinstance(layers, int) or not 0 <= layers <= len(header):  # every layer stores a tensor
        raise ArtifactError(f"{directory}: weights do not fit the card ({layers!r} layers; the file holds "
                            f"{len(header)} tensors)")
    try:
        with torch.device("meta"):
            implied = {k: tuple(v.shape) for k, v in fp32_structure(arch).state_dict().items()}
    except Exception as e:  # a card that names an unknown model or impossible sizes
        raise ArtifactError(f"{directory}: the card's architecture cannot be built ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not card.get("compression") or (card["compression"] or {}).get("encoding", "fp32") == "fp32":
        for key in sorted(implied.keys() | header.keys()):
            if implied.get(key) != header.get(key):
                raise ArtifactError(f"{directory}: weights do not fit the architecture ({key}: the card implies "
                                    f"{_shape(implied.get(key))}, the file has {_shape(header.get(key))})")
        return
    parameters = sum(math.prod(shape) for shape in implied.values())
    if parameters * STORED_BYTES_PER_PARAMETER > size + PARAMETER_MARGIN:
        raise ArtifactError(f"{directory}: weights do not fit the card (its architecture has {parameters} "
                            f"parameters; the weights file holds {size} bytes)")


def _shape(shape: tuple[int, ...] | None) -> str:
    return "nothing" if shape is None else str(list(shape))


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
    with torch.device("meta"):  # no memory and no random init for numbers the weights replace
        model = build(card["architecture"])
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise ArtifactError(f"{directory}: weights do not fit the architecture ({str(e).splitlines()[0]})") from None
    return card, model.float().eval()
