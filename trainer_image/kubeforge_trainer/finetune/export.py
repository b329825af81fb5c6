"""What a finished fine-tune leaves in the job's storage (rank 0, after training): `artifact`, the
fine-tuned model as a Hugging Face directory (safetensors weights, config, tokenizer) that
`AutoModelForCausalLM.from_pretrained` loads offline, and for LoRA `adapter`, the peft adapter
directory. Each holds `kubeforge-lineage.json` (base model and data digests, method and settings,
trainable share, evaluation). Merging adapters under FSDP is unsupported upstream, so the export is its
own single-process step: the trained weights are gathered to full tensors, loaded onto a fresh copy of
the base, and the adapters merged there. Directories are written under a temporary name and renamed
into place, so a crash mid-export leaves no half-written artifact."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from kubeforge_api.contracts import ArtifactInfo
from kubeforge_api.finetune import ADAPTER_DIR, Finetune
from kubeforge_api.storage import ModelFormat
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from .. import checkpoint
from ..checkpoint import sha256_file
from ..formats.identity import files, identify, manifest_digest
from .model import load_base, with_method

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ARTIFACT_DIR = "artifact"
LINEAGE = "kubeforge-lineage.json"
LINEAGE_FORMAT = "kubeforge-lineage/v1"


def gather(model: nn.Module, lora: bool) -> dict[str, torch.Tensor]:
    """The trained weights as full tensors on rank 0 (a collective; other ranks get nothing)."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=lora)
    return {k: v for k, v in get_model_state_dict(model, options=options).items() if isinstance(v, torch.Tensor)}


def file_digest(path: Path) -> str:
    return "sha256:" + sha256_file(path)


def _load_trained(model: nn.Module, trained: dict[str, torch.Tensor], lora: bool) -> None:
    wanted = {n for n, p in model.named_parameters() if p.requires_grad} if lora else set(model.state_dict())
    if not wanted <= set(trained) or not set(trained) <= set(model.state_dict()):
        raise RuntimeError(f"the gathered weights do not fit the exported model ({len(wanted ^ set(trained))} differ)")
    model.load_state_dict(trained, strict=not lora)


def _staging(storage: Path, name: str) -> Path:
    tmp = storage / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(storage: Path, tmp: Path, name: str, lineage: dict[str, Any]) -> Path:
    (tmp / LINEAGE).write_text(json.dumps(lineage, indent=2, sort_keys=True))
    checkpoint.check_fence(storage / "checkpoints", checkpoint.my_attempt())  # an old attempt publishes nothing
    final = storage / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def adapter_info(directory: Path) -> ArtifactInfo:
    size = sum((directory / rel).stat().st_size for rel in files(directory))
    return ArtifactInfo(path=ADAPTER_DIR, digest=manifest_digest(directory), size_bytes=size,
                        format=ModelFormat.HF_TRANSFORMERS)


def export(storage: Path, model_dir: Path, ft: Finetune, trained: dict[str, torch.Tensor],
           tokenizer: PreTrainedTokenizerBase, lineage: dict[str, Any]) -> tuple[ArtifactInfo, ArtifactInfo | None]:
    """Write `adapter` (LoRA) and `artifact`; their descriptions for the termination message."""
    lora = ft.method == "lora"
    base = load_base(model_dir, ft.model.uri)
    base.name_or_path = base.config.name_or_path = ft.model.uri  # the adapter's base: the uri, not a mount path
    model = with_method(base, ft)
    _load_trained(model, trained, lora)
    lineage = {"format": LINEAGE_FORMAT, **lineage}
    adapter = None
    if lora:
        tmp = _staging(storage, ADAPTER_DIR)
        model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)  # type: ignore[operator]
        adapter = adapter_info(_publish(storage, tmp, ADAPTER_DIR, {**lineage, "kind": "adapter"}))
        model = model.merge_and_unload()  # type: ignore[operator]
        lineage = {**lineage, "adapter": {"path": ADAPTER_DIR, "digest": adapter.digest}}
    tmp = _staging(storage, ARTIFACT_DIR)
    model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(tmp)
    final = _publish(storage, tmp, ARTIFACT_DIR, {**lineage, "kind": "merged-model" if lora else "model"})
    identity = identify(final)
    info = ArtifactInfo(path=ARTIFACT_DIR, digest=identity.digest, size_bytes=identity.size_bytes,
                        format=identity.format)
    return info, adapter
