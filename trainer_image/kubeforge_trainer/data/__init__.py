"""Datasets that need no download: scikit-learn's bundled digits, generated synthetic data, a
character-level text corpus (built in, or a file), and user files under the job's storage
(`.npz`, `.jsonl`, `.parquet`). Everything is materialised as tensors with a fixed train/eval
split, so every rank and every restart sees the same data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from kubeforge_api.trainingjob import Recipe

from ..context import ConfigError

EVAL_FRACTION = 0.2


@dataclass(frozen=True)
class Data:
    name: str
    task: str  # "classify" or "lm"
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    num_classes: int  # classes, or vocabulary size for "lm"
    image_shape: tuple[int, int, int] | None = None

    @property
    def input_dim(self) -> int:
        return int(self.x_train[0].numel())

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for t in (self.x_train, self.y_train, self.x_eval, self.y_eval):
            h.update(t.contiguous().numpy().tobytes())
        return "sha256:" + h.hexdigest()


def _split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, task: str = "classify",
           image_shape: tuple[int, int, int] | None = None) -> Data:
    perm = np.random.default_rng(1234).permutation(len(x))  # fixed: the split never depends on the job seed
    n_eval = max(1, int(len(x) * EVAL_FRACTION))
    ev, tr = perm[:n_eval], perm[n_eval:]
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(np.ascontiguousarray(y))
    return Data(name, task, xt[tr], yt[tr], xt[ev], yt[ev], num_classes, image_shape)


def digits() -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return _split("digits", x, d.target.astype(np.int64), 10, image_shape=(1, 8, 8))


def synthetic(n: int = 4096, dim: int = 32, classes: int = 4) -> Data:
    rng = np.random.default_rng(7)
    w = rng.normal(size=(dim, classes))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = np.argmax(x @ w + 0.1 * rng.normal(size=(n, classes)), axis=1).astype(np.int64)
    return _split("synthetic", x, y, classes)


def text(corpus: str, seq_len: int, name: str = "text") -> Data:
    """Byte-level language modelling: inputs are windows of `seq_len` bytes, targets shifted by one."""
    data = np.frombuffer(corpus.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    if len(data) < seq_len + 2:
        raise ConfigError(f"text dataset has {len(data)} bytes; need more than seqLen={seq_len}")
    starts = np.arange(0, len(data) - seq_len - 1, max(1, seq_len // 2))
    x = np.stack([data[s : s + seq_len] for s in starts])
    y = np.stack([data[s + 1 : s + seq_len + 1] for s in starts])
    return _split(name, x, y, 256, task="lm")


def builtin_corpus() -> str:
    return resources.files(__package__).joinpath("corpus.txt").read_text(encoding="utf-8")


def from_file(path: Path, seq_len: int) -> Data:
    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return text(path.read_text(encoding="utf-8"), seq_len, path.name)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:  # never unpickle user files
            if "x" not in z or "y" not in z:
                raise ConfigError(f"{path.name}: an .npz dataset needs arrays 'x' and 'y'")
            x, y = z["x"].astype(np.float32), z["y"].astype(np.int64)
    elif suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if rows and "text" in rows[0]:
            return text("\n".join(r["text"] for r in rows), seq_len, path.name)
        try:
            x = np.asarray([r["x"] for r in rows], dtype=np.float32)
            y = np.asarray([r["y"] for r in rows], dtype=np.int64)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{path.name}: each line needs numeric 'x' (list) and integer 'y': {e}") from None
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError("reading .parquet needs pyarrow in the trainer image") from None
        table = pq.read_table(path).to_pydict()
        x = np.asarray(table["x"], dtype=np.float32)
        y = np.asarray(table["y"], dtype=np.int64)
    else:
        raise ConfigError(f"unsupported dataset file type {suffix!r} (use .npz, .jsonl, .parquet or .txt)")
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ConfigError(f"{path.name}: expected x of shape (n, features) and y of shape (n,)")
    if y.min() < 0:
        raise ConfigError(f"{path.name}: labels must be non-negative class indices")
    return _split(path.name, x, y, int(y.max()) + 1)


def load(recipe: Recipe, storage: Path) -> Data:
    seq_len = int(recipe.model_config_.get("seqLen", 64))
    if recipe.dataset == "digits":
        return digits()
    if recipe.dataset == "synthetic":
        return synthetic(int(recipe.model_config_.get("samples", 4096)), int(recipe.model_config_.get("features", 32)),
                         int(recipe.model_config_.get("classes", 4)))
    if recipe.dataset == "text":
        if recipe.dataset_path:
            return text((storage / recipe.dataset_path).read_text(encoding="utf-8"), seq_len, recipe.dataset_path)
        return text(builtin_corpus(), seq_len, "builtin-text")
    assert recipe.dataset_path is not None  # the Recipe model requires it for "file"
    return from_file(storage / recipe.dataset_path, seq_len)
