"""Hugging Face transformers models as Kubeforge artifacts (what compressing a model users bring
publishes). The card's architecture is `{"model": "hf-transformers", "task", "class", "config",
"files"}`: `config` is the model's whole `config.json`, so the structure is rebuilt from the card
alone (by transformers' own classes for the task, never remote code); `files` names the files the
directory carries beside the weights (config, tokenizer or image processor) with their digests, so
whatever serves it finds the tokenizer there and can check it is the one the model was compressed
with. Weights are the variant codec's plain tensors, like every other artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import sha256_file

HF_MODEL = "hf-transformers"
# task -> the transformers auto class that builds it
TASKS = {"text-classification": "AutoModelForSequenceClassification",
         "image-classification": "AutoModelForImageClassification",
         "causal-lm": "AutoModelForCausalLM"}
SUFFIX_TASKS = {"ForSequenceClassification": "text-classification", "ForImageClassification": "image-classification",
                "ForCausalLM": "causal-lm", "LMHeadModel": "causal-lm"}
# what a directory carries beside the weights: configs, tokenizers, image processors, chat templates
SIDE_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken")
SIDE_EXCLUDED = ("model-card.json", "model.safetensors.index.json")


class HFError(ValueError):
    """A card or directory whose transformers model cannot be built (one line)."""


def is_hf(arch: dict[str, Any]) -> bool:
    return arch.get("model") == HF_MODEL


def task_of(class_name: str) -> str:
    """The task a transformers model class serves (`BertForSequenceClassification` -> text-classification)."""
    for suffix, task in SUFFIX_TASKS.items():
        if class_name.endswith(suffix):
            return task
    raise HFError(f"{class_name}: Kubeforge compresses and serves sequence classification, image "
                  "classification and causal language models")


def sha256_of(path: Path) -> str:
    return "sha256:" + sha256_file(path)


def side_files(directory: Path) -> dict[str, str]:
    """The files beside an HF model's weights that a copy of it needs (name -> digest)."""
    return {p.name: sha256_of(p) for p in sorted(directory.iterdir())
            if p.is_file() and not p.is_symlink() and p.suffix in SIDE_SUFFIXES and p.name not in SIDE_EXCLUDED}


def check_side_files(directory: Path, arch: dict[str, Any]) -> None:
    """Refuse a directory whose config or tokenizer files are not the ones the card names."""
    for name, digest in dict(arch.get("files") or {}).items():
        path = directory / str(name)
        if Path(str(name)).name != name or not path.is_file() or sha256_of(path) != digest:
            raise HFError(f"{directory}: {name} is missing or not the file the model card names")


def architecture(model: nn.Module, files: dict[str, str]) -> dict[str, Any]:
    """The card's architecture for a transformers model (its config in full)."""
    config = getattr(model, "config", None)
    if config is None:
        raise HFError(f"{type(model).__name__} is not a transformers model (no config)")
    name = type(model).__name__
    doc = config.to_dict()
    doc.update({k: "float32" for k in ("dtype", "torch_dtype") if k in doc})  # int8 kernels take fp32 around them
    return {"model": HF_MODEL, "task": task_of(name), "class": name, "config": doc, "files": files}


def _config(arch: dict[str, Any]) -> Any:
    from transformers import CONFIG_MAPPING

    config = dict(arch.get("config") or {})
    model_type = str(config.get("model_type", ""))
    if model_type not in CONFIG_MAPPING:
        raise HFError(f"the card's config has model_type {model_type!r}, which this transformers does not know")
    if config.get("auto_map"):
        raise HFError("the card's config needs remote code (auto_map); Kubeforge never runs it")
    return CONFIG_MAPPING[model_type].from_dict(config)


def structure(arch: dict[str, Any]) -> nn.Module:
    """The fp32 model the card describes, in eval mode, its weights left uninitialised (the caller
    loads them; under `torch.device("meta")` nothing is allocated). Non-persistent buffers (position
    ids, rotary frequencies) are computed as the model's constructor computes them."""
    import transformers
    from transformers.initialization import no_init_weights

    task = str(arch.get("task", ""))
    if task not in TASKS:
        raise HFError(f"the card's task {task!r} is not one of {sorted(TASKS)}")
    config = _config(arch)
    auto = getattr(transformers, TASKS[task])
    with no_init_weights():
        model: nn.Module = auto.from_config(config, trust_remote_code=False)
    if type(model).__name__ != arch.get("class"):
        raise HFError(f"the card names {arch.get('class')!r}, its config builds {type(model).__name__}")
    return model.eval()
