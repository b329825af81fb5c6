"""The user's own evaluation data (`spec.compression.evalData`, or `kubeforge compress --eval-data`),
read from a local path and bounded by `maxSamples` (the first examples; for images, the first of
each label in turn, so a bound still covers every label). Four formats:

- `jsonl`: one `{"text": ..., "label": ...}` object per line; the label is one of the model's label
  names (`id2label`) or a class index;
- `images`: a directory of `LABEL/IMAGE` files; `.npy` arrays (HxWxC or HxW, uint8) always, and
  PNG, JPEG, BMP, GIF or WebP files when Pillow is installed (the trainer image does not require it);
- `tensors`: a safetensors file holding `inputs` and integer `labels` of the same length;
- `text`: plain text, cut into fixed-length windows of tokens (causal-LM perplexity).

Every error is one line naming the file (and the line, for JSONL): `FILE:LINE: what`."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

FORMATS = ("jsonl", "images", "tensors", "text")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".safetensors": "tensors", ".txt": "text", ".text": "text"}
NPY = ".npy"
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MAX_LINE_BYTES = 1 << 20  # one JSONL example; a longer line is refused, not parsed


class EvalDataError(ValueError):
    """Evaluation data that cannot be used (one line: `FILE[:LINE]: what`)."""


@dataclass(frozen=True)
class EvalSource:
    """Where the evaluation data lies on this machine, its format and how many examples (for `text`,
    token windows) to use."""

    path: Path
    format: str
    max_samples: int = 2000


def infer_format(path: Path) -> str:
    """The format a path's name implies: a directory holds images, a file's suffix says the rest."""
    if path.is_dir():
        return "images"
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise EvalDataError(f"{path}: cannot tell the evaluation data's format from its name (use a "
                            f"{', '.join(sorted(SUFFIXES))} file or a directory of images, or name the format)")
    return fmt


def pil_available() -> bool:
    return importlib.util.find_spec("PIL") is not None


def label_id(value: object, label2id: Mapping[str, int], num_labels: int) -> int | str:
    """A class index for a label given by name or index, or the words for why it is none."""
    if isinstance(value, bool):
        return f"label {value!r} is neither a label name nor a class index"
    if isinstance(value, int):
        return value if 0 <= value < num_labels else f"label {value} is not a class index (0..{num_labels - 1})"
    if isinstance(value, str) and value in label2id:
        return label2id[value]
    names = ", ".join(list(label2id)[:8]) + (", ..." if len(label2id) > 8 else "")
    return f"label {value!r} is not one of the model's labels ({names})"


def _jsonl_row(line: str, label2id: Mapping[str, int], num_labels: int) -> tuple[str, int] | str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return f"not JSON ({e.msg} at column {e.colno})"
    if not isinstance(row, dict):
        return f"expected an object with \"text\" and \"label\", got {type(row).__name__}"
    if not isinstance(row.get("text"), str):
        return "\"text\" is missing or not a string"
    if "label" not in row:
        return "\"label\" is missing"
    label = label_id(row["label"], label2id, num_labels)
    return label if isinstance(label, str) else (row["text"], label)


def read_jsonl(path: Path, max_samples: int, label2id: Mapping[str, int],
               num_labels: int) -> tuple[list[str], list[int]]:
    """The first `max_samples` (text, label) pairs; blank lines are skipped."""
    texts: list[str] = []
    labels: list[int] = []
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            if len(texts) >= max_samples:
                break
            if len(raw) > MAX_LINE_BYTES:
                raise EvalDataError(f"{path}:{number}: line longer than {MAX_LINE_BYTES} bytes")
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise EvalDataError(f"{path}:{number}: not UTF-8 text") from None
            if not line:
                continue
            row = _jsonl_row(line, label2id, num_labels)
            if isinstance(row, str):
                raise EvalDataError(f"{path}:{number}: {row}")
            texts.append(row[0])
            labels.append(row[1])
    if not texts:
        raise EvalDataError(f"{path}: no examples")
    return texts, labels


def _open(path: Path) -> Any:
    try:
        return path.open("rb")
    except OSError as e:
        raise EvalDataError(f"{path}: cannot read ({e.strerror})") from None


def image_files(directory: Path, label2id: Mapping[str, int], num_labels: int) -> dict[int, list[Path]]:
    """Image files per class index, from `directory/LABEL/IMAGE` (LABEL: a label name or index)."""
    if not directory.is_dir():
        raise EvalDataError(f"{directory}: images evaluation data must be a directory of LABEL/IMAGE files")
    out: dict[int, list[Path]] = {}
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        key: object = int(sub.name) if sub.name.isdigit() and sub.name not in label2id else sub.name
        label = label_id(key, label2id, num_labels)
        if isinstance(label, str):
            raise EvalDataError(f"{sub}: {label}")
        out.setdefault(label, []).extend(sorted(p for p in sub.iterdir() if p.is_file()))
    if not any(out.values()):
        raise EvalDataError(f"{directory}: no LABEL/IMAGE files")
    return out


def read_image(path: Path) -> np.ndarray:
    """An image as an HxWx3 uint8 array."""
    suffix = path.suffix.lower()
    if suffix == NPY:
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise EvalDataError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None
    elif suffix in PIL_SUFFIXES and pil_available():
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise EvalDataError(f"{path}: not a readable image ({e})") from None
    else:
        kinds = ".npy (HxWxC uint8)" + (", " + ", ".join(PIL_SUFFIXES) if pil_available() else
                                        "; other image files need Pillow, which is not installed")
        raise EvalDataError(f"{path}: unsupported image file (supported: {kinds})")
    return _rgb(path, array)


def _rgb(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise EvalDataError(f"{path}: image must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise EvalDataError(f"{path}: image must be HxW or HxWxC with C 1, 3 or 4, got shape {list(array.shape)}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def read_images(directory: Path, max_samples: int, label2id: Mapping[str, int],
                num_labels: int) -> tuple[list[np.ndarray], list[int]]:
    """Up to `max_samples` images, taking one of each label in turn (labels in index order)."""
    per_label = image_files(directory, label2id, num_labels)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for row in zip_longest(*([(label, p) for p in per_label[label]] for label in sorted(per_label))):
        for item in row:
            if item is not None and len(images) < max_samples:
                images.append(read_image(item[1]))
                labels.append(item[0])
    return images, labels


def read_tensors(path: Path, max_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `max_samples` rows of `inputs` and `labels` (read without loading the rest)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            missing = sorted({"inputs", "labels"} - keys)
            if missing:
                raise EvalDataError(f"{path}: lacks {' and '.join(repr(k) for k in missing)} (has {sorted(keys)[:8]})")
            inputs, labels = f.get_slice("inputs")[:max_samples], f.get_slice("labels")[:max_samples]
    except EvalDataError:
        raise
    except Exception as e:  # safetensors refuses anything else (a pickle renamed, a truncated file)
        raise EvalDataError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise EvalDataError(f"{path}: 'labels' must be a 1-d integer tensor, got {labels.dtype} {list(labels.shape)}")
    if inputs.dim() < 1 or len(inputs) != len(labels) or len(labels) == 0:
        raise EvalDataError(f"{path}: 'inputs' ({list(inputs.shape)}) and 'labels' ({list(labels.shape)}) must "
                            "hold the same number of examples, at least one")
    return inputs, labels.long()


def _lines(path: Path) -> Iterator[str]:
    with _open(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                raise EvalDataError(f"{path}:{number}: not UTF-8 text") from None


def text_windows(path: Path, encode: Callable[[str], list[int]], length: int, max_samples: int) -> torch.Tensor:
    """Up to `max_samples` non-overlapping windows of `length` tokens of the text, [n, length]: the
    file is read (and tokenized) a block of lines at a time, only as far as the windows need."""
    ids: list[int] = []
    block: list[str] = []
    need = length * max_samples
    for line in _lines(path):
        block.append(line)
        if sum(map(len, block)) >= 65536:
            ids += encode("".join(block))
            block = []
            if len(ids) >= need:
                break
    if block:
        ids += encode("".join(block))
    n = min(max_samples, len(ids) // length)
    if n == 0:
        raise EvalDataError(f"{path}: fewer than {length} tokens of text (one evaluation window)")
    return torch.tensor(ids[: n * length], dtype=torch.long).reshape(n, length)
