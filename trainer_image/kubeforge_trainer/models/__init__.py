"""Models defined in code, each an `nn.Sequential` of single-tensor layers so the pipeline strategy
can cut it into stages anywhere. `architecture()` is the JSON config that rebuilds the model (the
model card carries it; serving rebuilds from it, never from pickled code)."""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..context import ConfigError


class Dataset(Protocol):
    """What `architecture` reads of a dataset (`kubeforge_trainer.data.Data` has it). The models
    import nothing of the data layer, so rebuilding a model from its card loads no dataset code."""

    @property
    def name(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def image_shape(self) -> tuple[int, int, int] | None: ...
    @property
    def input_dim(self) -> int: ...
    @property
    def x_train(self) -> torch.Tensor: ...


class Reshape(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x.reshape(x.shape[0], *self.shape)
        return out


class TokenEmbedding(nn.Module):
    def __init__(self, vocab: int, dim: int, seq_len: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(seq_len, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.tok(ids) + self.pos[: ids.shape[1]]
        return out


class Block(nn.Module):
    """Pre-norm transformer block with causal self-attention. The head count follows `qkv`'s width
    (heads of `dim // heads` each), so a block whose heads were pruned runs unchanged."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        inner = int(self.qkv.out_features) // 3
        q, k, v = self.qkv(self.ln1(x)).split(inner, dim=2)
        q, k, v = (z.view(b, t, inner // self.head_dim, self.head_dim).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, inner))
        out: torch.Tensor = x + self.mlp(self.ln2(x))
        return out


class LMHead(nn.Module):
    def __init__(self, dim: int, vocab: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(self.ln(x))
        return out


def architecture(model: str, data: Dataset, cfg: dict[str, int | str]) -> dict[str, Any]:
    """The full, defaulted configuration of `model` for `data`."""
    if model in ("mlp", "cnn") and data.task != "classify":
        raise ConfigError(f"model {model} needs a classification dataset; {data.name} is a text dataset")
    if model == "gpt" and data.task != "lm":
        raise ConfigError(f"model gpt needs a text dataset; {data.name} is a classification dataset")
    if model == "mlp":
        return {"model": "mlp", "inputDim": data.input_dim, "hidden": int(cfg.get("hidden", 128)),
                "layers": int(cfg.get("layers", 2)), "numClasses": data.num_classes}
    if model == "cnn":
        if data.image_shape is None:
            raise ConfigError(f"model cnn needs an image dataset (digits); {data.name} has none")
        return {"model": "cnn", "imageShape": list(data.image_shape), "channels": int(cfg.get("channels", 16)),
                "numClasses": data.num_classes}
    dim, heads = int(cfg.get("dim", 64)), int(cfg.get("heads", 4))
    if dim % heads:
        raise ConfigError(f"modelConfig.dim ({dim}) must be divisible by heads ({heads})")
    return {"model": "gpt", "vocab": data.num_classes, "dim": dim, "heads": heads, "layers": int(cfg.get("layers", 2)),
            "seqLen": int(data.x_train.shape[1])}


def build(arch: dict[str, Any]) -> nn.Sequential:
    if arch["model"] == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = arch["inputDim"]
        for _ in range(arch["layers"]):
            layers += [nn.Linear(width, arch["hidden"]), nn.ReLU()]
            width = arch["hidden"]
        return nn.Sequential(*layers, nn.Linear(width, arch["numClasses"]))
    if arch["model"] == "cnn":
        c, h, w = arch["imageShape"]
        ch = arch["channels"]
        return nn.Sequential(Reshape(c, h, w), nn.Conv2d(c, ch, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(ch * h * w, arch["numClasses"]))
    if arch["model"] == "gpt":
        blocks = [Block(arch["dim"], arch["heads"]) for _ in range(arch["layers"])]
        return nn.Sequential(TokenEmbedding(arch["vocab"], arch["dim"], arch["seqLen"]), *blocks,
                             LMHead(arch["dim"], arch["vocab"]))
    raise ConfigError(f"unknown model {arch['model']!r}")


def loss_fn(task: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task == "lm":
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
    return F.cross_entropy(logits.float(), y)
