"""A Hugging Face transformers directory as a compression parent: the model as `formats.load` gives
it (a sequence classifier, image classifier or causal LM; safetensors only, offline, never remote
code), in fp32, evaluated on the user's own data in the format that fits its task (`jsonl` or
`tensors` for a text classifier, `images` or `tensors` for an image classifier, `text` for a causal
LM: perplexity over windows of `LM_WINDOW` tokens), its inputs made as the inference server makes
them (its tokenizer, right padding with the attention mask; images rescaled and normalised by the
model's image processor settings); and the architecture its compressed variants' cards carry
(`variants.hf`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from kubeforge_api.compression import ArtifactRef
from kubeforge_api.storage import ModelFormat

from ..checkpoint import sha256_file
from ..evaldata import EvalDataError, EvalSource, read_images, read_jsonl, read_tensors, text_windows
from ..formats import FormatError, ImageNorm, Loaded, load
from ..formats.identity import identify, manifest_digest
from ..variants import hf as hf_format
from .evaluate import (
    Evaluation,
    ImageLogits,
    TextLogits,
    causal_lm,
    tensor_classification,
    text_classification,
)
from .parent import CompressInputError, Parent

LM_WINDOW = 128  # tokens per perplexity window (the model's max length if fewer)
FITS = {"jsonl": ("text-classification",), "images": ("image-classification",), "text": ("causal-lm",),
        "tensors": ("text-classification", "image-classification")}
FORMAT_FOR = {"text-classification": "jsonl (or tensors of token ids)", "causal-lm": "text",
              "image-classification": "images (or tensors of pixel values)"}


def load_hf(directory: Path, path: str, source: EvalSource | None) -> Parent:
    """The parent for a transformers directory (`path`: relative to the storage root)."""
    if source is None:
        raise CompressInputError(f"cannot compress {directory.name}: a Hugging Face model has no recipe that says "
                                 "what to evaluate it on; give evaluation data (spec.compression.evalData, or "
                                 "--eval-data)")
    try:
        loaded = load(directory)
    except FormatError as e:
        raise CompressInputError(f"cannot compress {directory.name}: {e}") from None
    loaded.model.float()  # int8 kernels take fp32 (a model may have been saved in half precision)
    files = hf_format.side_files(directory)
    arch = hf_format.architecture(loaded.model, files)
    evaluation = evaluation_for(loaded, arch["task"], source)
    ident = identify(directory)
    weights = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
    ref = ArtifactRef(path=path, digest=ident.digest, size_bytes=ident.size_bytes)
    return Parent(directory, ModelFormat.HF_TRANSFORMERS, loaded.model, arch, evaluation, ref, weights)


def evaluation_for(loaded: Loaded, task: str, source: EvalSource) -> Evaluation:
    """The model's evaluation on the user's data (a format that does not fit the task is refused)."""
    if task not in FITS.get(source.format, ()):
        raise CompressInputError(f"evaluation data in format {source.format} does not fit {loaded.architecture} "
                                 f"(a {task} model): use {FORMAT_FOR[task]}")
    config: Any = getattr(loaded.model, "config")  # noqa: B009
    try:
        if source.format == "jsonl":
            evaluation, n = _jsonl(loaded, config, source)
        elif source.format == "text":
            windows = text_windows(source.path, _encoder(loaded), min(LM_WINDOW, loaded.max_length or LM_WINDOW),
                                   source.max_samples)
            evaluation, n = causal_lm(windows), len(windows)
        elif source.format == "images":
            images, labels = read_images(source.path, source.max_samples, config.label2id, config.num_labels)
            evaluation = tensor_classification(ImageLogits, pixels(loaded, images), torch.tensor(labels))
            n = len(labels)
        else:
            evaluation, n = _tensors(config, task, source)
    except EvalDataError as e:
        raise CompressInputError(str(e)) from None
    digest = manifest_digest(source.path) if source.path.is_dir() else "sha256:" + sha256_file(source.path)
    evaluation.dataset = {"name": source.path.name, "format": source.format, "samples": n, "digest": digest}
    return evaluation


def _tokenizer(loaded: Loaded) -> Any:
    if loaded.tokenizer is None:
        raise CompressInputError(f"{loaded.architecture} has no tokenizer (tokenizer.json) to read text with; give "
                                 "tensors of token ids instead")
    return loaded.tokenizer


def _encoder(loaded: Loaded) -> Any:
    tokenizer = _tokenizer(loaded)

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    return encode


def pad_id(tokenizer: Any, config: Any) -> int:
    """The padding token: the tokenizer's, else the config's, else 0."""
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(config, "pad_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def _jsonl(loaded: Loaded, config: Any, source: EvalSource) -> tuple[Evaluation, int]:
    tokenizer = _tokenizer(loaded)
    texts, labels = read_jsonl(source.path, source.max_samples, config.label2id, config.num_labels)
    ids = tokenizer(texts, truncation=True, max_length=loaded.max_length, verbose=False)["input_ids"]
    pad = pad_id(tokenizer, config)
    return text_classification(lambda m: TextLogits(m, pad), [list(r) for r in ids], labels, pad), len(labels)


def _tensors(config: Any, task: str, source: EvalSource) -> tuple[Evaluation, int]:
    x, y = read_tensors(source.path, source.max_samples)
    if int(y.min()) < 0 or int(y.max()) >= config.num_labels:
        raise EvalDataError(f"{source.path}: 'labels' must be class indices 0..{config.num_labels - 1}")
    if task == "text-classification":
        if x.dtype.is_floating_point or x.dim() != 2:
            raise EvalDataError(f"{source.path}: a text classifier's 'inputs' are token ids [N, length], got "
                                f"{x.dtype} {list(x.shape)}")
        pad = pad_id(None, config)
        return tensor_classification(lambda m: TextLogits(m, pad), x.long(), y), len(y)
    if not x.dtype.is_floating_point or x.dim() != 4:
        raise EvalDataError(f"{source.path}: an image classifier's 'inputs' are pixel values [N, C, H, W], got "
                            f"{x.dtype} {list(x.shape)}")
    return tensor_classification(ImageLogits, x.float(), y), len(y)


def pixels(loaded: Loaded, images: list[np.ndarray]) -> torch.Tensor:
    """Pixel values for HxWx3 uint8 images, as the inference server makes them from 8-bit images
    (rescaled and normalised by the image processor's settings), each first resized to the model's
    input size (bilinear, antialiased) where it differs."""
    norm: ImageNorm | None = loaded.image
    if norm is None:
        raise CompressInputError(f"{loaded.architecture}: its image processor's settings do not say how to normalise "
                                 "8-bit images; give tensors of pixel values instead")
    out = []
    for image in images:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        if tuple(x.shape[2:]) != (norm.height, norm.width):
            x = F.interpolate(x, size=(norm.height, norm.width), mode="bilinear", antialias=True, align_corners=False)
        if norm.rescale is not None:
            x = x * norm.rescale
        if norm.mean is not None and norm.std is not None:
            x = (x - torch.tensor(norm.mean).view(1, -1, 1, 1)) / torch.tensor(norm.std).view(1, -1, 1, 1)
        out.append(x)
    return torch.cat(out)
