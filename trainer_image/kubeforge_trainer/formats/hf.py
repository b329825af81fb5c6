"""Hugging Face transformers directories: `config.json`, `*.safetensors` weights, and a `tokenizer.json`
fast tokenizer (text models) or `preprocessor_config.json` (image models). The head comes from
`config.architectures` (sequence classification, image classification, causal LM); the weights load
only from safetensors, offline, without remote code, and every weight the architecture needs must be
there (none initialised at random). The image processor's settings are read as JSON, never run.
Everything that goes wrong is one `FormatError` line naming the directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubeforge_api.inference import Datatype
from kubeforge_api.storage import ModelFormat
from safetensors import safe_open

from .identity import HF_CONFIG, FormatError
from .loaded import ImageNorm, Loaded, Task, Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

HEADS = {"ForSequenceClassification": Task.TEXT_CLASSIFICATION, "ForImageClassification": Task.IMAGE_CLASSIFICATION,
         "ForCausalLM": Task.CAUSAL_LM, "LMHeadModel": Task.CAUSAL_LM}
TOKENIZER = "tokenizer.json"
PROCESSOR = "preprocessor_config.json"
PICKLED = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
DEFAULT_MAX_LENGTH = 512  # tokens, when neither the config nor the tokenizer bounds the length
UNBOUNDED_LENGTH = 1_000_000  # tokenizers say 1e30 for "no limit"
TEXT, TOKEN_IDS, PIXELS = "text", "input_ids", "pixel_values"


def load_hf(directory: Path, digest: str) -> Loaded:
    doc = read_json(directory, HF_CONFIG)
    architecture, task = head(directory, doc)
    check_weights(directory)
    if task == Task.IMAGE_CLASSIFICATION:
        image_settings(directory, doc)  # a model without an image size is refused before its weights load
    model = _model(directory, task)
    return describe_hf(directory, doc, model, task, architecture, ModelFormat.HF_TRANSFORMERS, digest)


def describe_hf(directory: Path, doc: dict[str, Any], model: PreTrainedModel, task: Task, architecture: str,
                fmt: ModelFormat, digest: str) -> Loaded:
    """A transformers model (fp32, or a compressed variant of one) with its tokenizer or image settings
    from `directory` and the tensors its task takes and answers."""
    image = image_settings(directory, doc) if task == Task.IMAGE_CLASSIFICATION else None
    tokenizer = _tokenizer(directory) if task != Task.IMAGE_CLASSIFICATION else None
    config = model.config
    labels = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    common: dict[str, Any] = {"format": fmt, "digest": digest, "model": model,
                              "task": task, "architecture": architecture, "tokenizer": tokenizer}
    if image is not None:
        (height, width), norm = image
        x = Tensor(PIXELS, Datatype.FP32, (-1, int(getattr(config, "num_channels", 3)), height, width))
        return Loaded(**common, inputs=(x,), outputs=_classes(PIXELS, labels), id2label=labels, image=norm)
    max_length = _max_length(doc, tokenizer)
    vocab = int(_field(directory, config, "vocab_size"))
    embeddings = int(getattr(model.get_input_embeddings(), "num_embeddings", vocab))  # token ids below this
    x = (Tensor(TEXT, Datatype.BYTES, (-1,)) if tokenizer is not None else
         Tensor(TOKEN_IDS, Datatype.INT64, (-1, -1), upper=embeddings, max_variable=max_length,
                example=(1, min(8, max_length))))
    if task == Task.TEXT_CLASSIFICATION:
        return Loaded(**common, inputs=(x,), outputs=_classes(x.name, labels), id2label=labels, max_length=max_length)
    seq = None if tokenizer is not None else (x.name, 1)
    head_layer = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    width = int(getattr(head_layer, "out_features", vocab))  # a padded vocabulary's logits
    y = Tensor("logits", Datatype.FP32, (-1, -1, width), sizes_from=((x.name, 0), seq, None))
    return Loaded(**common, inputs=(x,), outputs=(y,), max_length=max_length)


def read_json(directory: Path, name: str) -> dict[str, Any]:
    try:
        doc = json.loads((directory / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{directory}: {name} is not readable JSON ({_first_line(e)})") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{directory}: {name} is not a JSON object")
    return doc


def head(directory: Path, doc: dict[str, Any]) -> tuple[str, Task]:
    """The architecture `config.json` names and the task of its head."""
    names = doc.get("architectures")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise FormatError(f"{directory}: {HF_CONFIG} names no architectures (e.g. \"BertForSequenceClassification\")")
    for name in names:
        for suffix, task in HEADS.items():
            if name.endswith(suffix):
                return name, task
    raise FormatError(f"{directory}: architecture {names[0]!r} is not served; Kubeforge serves "
                      "...ForSequenceClassification, ...ForImageClassification and ...ForCausalLM models")


def check_weights(directory: Path) -> None:
    """At least one safetensors file, and every one with a readable header (nothing pickled is read)."""
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLED)
        found = f" (found {', '.join(pickled[:3])}: pickle files are never loaded)" if pickled else ""
        raise FormatError(f"{directory}: no *.safetensors weights{found}")
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error types and OSError: all mean unreadable
            raise FormatError(f"{directory}: {path.name} is not a readable safetensors file "
                              f"({_first_line(e)})") from None


def offline() -> None:
    """Nothing of the Hugging Face libraries may reach the network, whoever imported them first."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True


def _model(directory: Path, task: Task) -> PreTrainedModel:
    offline()
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    auto = {Task.TEXT_CLASSIFICATION: AutoModelForSequenceClassification,
            Task.IMAGE_CLASSIFICATION: AutoModelForImageClassification, Task.CAUSAL_LM: AutoModelForCausalLM}[task]
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except Exception as e:  # unknown model_type, malformed fields: transformers raises many types
        raise FormatError(f"{directory}: {HF_CONFIG} is not a configuration transformers knows "
                          f"({_first_line(e)})") from None
    try:
        model, info = auto.from_pretrained(directory, config=config, local_files_only=True, trust_remote_code=False,
                                           use_safetensors=True, output_loading_info=True,
                                           ignore_mismatched_sizes=True)  # reported below, in one line
    except Exception as e:
        raise FormatError(f"{directory}: the weights do not load into {type(config).__name__} "
                          f"({_first_line(e)})") from None
    missing = sorted(str(k) for k in info.get("missing_keys") or [])
    if missing:
        raise FormatError(f"{directory}: the weights lack {len(missing)} tensors the architecture needs "
                          f"(e.g. {missing[0][:120]}); none is initialised at random")
    mismatched = [str(k[0] if isinstance(k, tuple | list) else k) for k in info.get("mismatched_keys") or []]
    if mismatched:
        raise FormatError(f"{directory}: the weights do not fit {len(mismatched)} tensors of the architecture "
                          f"{HF_CONFIG} describes (e.g. {sorted(mismatched)[0][:120]})")
    model.eval()
    loaded: PreTrainedModel = model
    return loaded


def _tokenizer(directory: Path) -> PreTrainedTokenizerBase | None:
    """The fast tokenizer of `tokenizer.json`; None without one (the model then takes token ids)."""
    if not (directory / TOKENIZER).is_file():
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    except Exception as e:
        raise FormatError(f"{directory}: the tokenizer does not load ({_first_line(e)})") from None
    if not tokenizer.is_fast:
        raise FormatError(f"{directory}: {TOKENIZER} did not give a fast tokenizer")
    return tokenizer


def image_settings(directory: Path, doc: dict[str, Any]) -> tuple[tuple[int, int], ImageNorm | None]:
    """(height, width) of the model's images, from `config.json` or `preprocessor_config.json`, and
    what its image processor does to 8-bit pixels (None without a processor, or with one that
    normalises by its class's defaults, which only running it would tell)."""
    proc = read_json(directory, PROCESSOR) if (directory / PROCESSOR).is_file() else {}
    height, width = _image_size(directory, doc, proc)
    if not proc:
        return (height, width), None
    rescale = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else None
    if not proc.get("do_normalize", True):
        return (height, width), ImageNorm(height, width, rescale, None, None)
    mean, std = proc.get("image_mean"), proc.get("image_std")
    if mean is None or std is None:
        return (height, width), None
    channels = int(doc.get("num_channels", 3))
    try:
        m = tuple(float(v) for v in _per_channel(mean, channels))
        s = tuple(float(v) for v in _per_channel(std, channels))
    except (TypeError, ValueError):
        raise FormatError(f"{directory}: {PROCESSOR} image_mean and image_std need a number per channel") from None
    if any(v <= 0 for v in s):
        raise FormatError(f"{directory}: {PROCESSOR} image_std must be positive")
    return (height, width), ImageNorm(height, width, rescale, m, s)


def _image_size(directory: Path, doc: dict[str, Any], proc: dict[str, Any]) -> tuple[int, int]:
    size = doc.get("image_size")
    if size is None:
        size = proc.get("crop_size") if proc.get("do_center_crop") else proc.get("size")
    if isinstance(size, dict):
        size = (size.get("height"), size.get("width")) if "height" in size else size.get("shortest_edge")
    if isinstance(size, int):
        size = (size, size)
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(type(v) is int and v > 0 for v in size)):
        raise FormatError(f"{directory}: neither {HF_CONFIG} (image_size) nor {PROCESSOR} (size) says the image size")
    return int(size[0]), int(size[1])


def _per_channel(values: Any, channels: int) -> list[Any]:
    if isinstance(values, int | float):
        return [values] * channels
    if not isinstance(values, list) or len(values) != channels:
        raise ValueError("one value per channel")
    return values


def _classes(source: str, labels: dict[int, str]) -> tuple[Tensor, ...]:
    return (Tensor("logits", Datatype.FP32, (-1, len(labels)), sizes_from=((source, 0), None)),
            Tensor("label", Datatype.BYTES, (-1,), sizes_from=((source, 0),)))


def _max_length(doc: dict[str, Any], tokenizer: PreTrainedTokenizerBase | None) -> int:
    bounds = [int(doc[k]) for k in ("max_position_embeddings", "n_positions") if isinstance(doc.get(k), int)]
    if tokenizer is not None and 0 < int(tokenizer.model_max_length) < UNBOUNDED_LENGTH:
        bounds.append(int(tokenizer.model_max_length))
    return min(bounds) if bounds else DEFAULT_MAX_LENGTH


def _field(directory: Path, config: Any, name: str) -> Any:
    value = getattr(config, name, None)
    if value is None:
        raise FormatError(f"{directory}: {HF_CONFIG} has no {name}")
    return value


def _first_line(e: BaseException) -> str:
    """An exception as one short line, without the documentation links libraries append."""
    words = [w for w in str(e).split() if not w.startswith(("http://", "https://"))]
    text = " ".join(words) or type(e).__name__
    return text[:300]
