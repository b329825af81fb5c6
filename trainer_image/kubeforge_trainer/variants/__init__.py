"""Compressed variants as artifacts. The card's `compression` block says how the weights are encoded
(`fp32`, `int8-dynamic`, `int8-static`), which back end made them and the lineage (parent digest,
method, parameters, the candidate's report); `architecture.shapes` holds the layer shapes of a
pruned model; an architecture whose `model` is `hf-transformers` is a Hugging Face model rebuilt
from the config the card carries (`variants.hf`). `rebuild` is what `artifacts.load_model` calls for
any variant. This package is the model format under `artifacts`: it imports the models and nothing
of training, data or the compression pipeline, so whatever loads a model (the inference server)
loads none of those."""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from ..models import build
from . import hf
from .codec import CodecError, encode
from .quantize import QuantizeError, backend, loader
from .shapes import apply_shapes

ENCODINGS = ("fp32", "int8-dynamic", "int8-static")


class VariantError(ValueError):
    pass


def fp32_structure(arch: dict[str, Any]) -> nn.Module:
    """The fp32 model an architecture describes (fresh or uninitialised numbers the weights replace)."""
    if hf.is_hf(arch):
        return hf.structure(arch)
    model = build(arch)
    shapes = arch.get("shapes")
    if shapes:
        apply_shapes(model, {k: list(v) for k, v in shapes.items()})
    return model


def rebuild(card: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """The model a variant's card and (checked) weights describe, in eval mode."""
    info = card.get("compression") or {}
    encoding = info.get("encoding", "fp32")
    if encoding not in ENCODINGS:
        raise VariantError(f"unknown weights encoding {encoding!r}")
    try:
        model = fp32_structure(card["architecture"])
        if encoding == "fp32":
            model.load_state_dict(state, strict=True)
            return model.eval()
        mode = encoding.removeprefix("int8-")
        if hf.is_hf(card["architecture"]):
            with torch.no_grad():  # uninitialised memory: quantizing it as it is could meet NaNs
                for p in model.parameters():
                    p.zero_()
        return loader(str(info.get("backend", "auto")), mode).rebuild(model, mode, state)
    except (CodecError, QuantizeError, ValueError, RuntimeError, KeyError, TypeError, IndexError) as e:
        raise VariantError(f"weights do not fit the card ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                           ) from None


def serving_form(backend_name: str, encoding: str, model: nn.Module) -> nn.Module:
    """`model` in the form its back end serves it: what the compression report times and the server
    runs (torchao's: compiled with inductor freezing; everything else as it is)."""
    if not encoding.startswith("int8-"):
        return model
    mode = encoding.removeprefix("int8-")
    return loader(backend_name or "auto", mode).serving(model)


def served(card: dict[str, Any], model: nn.Module) -> nn.Module:
    """A loaded artifact's model in its serving form (see `serving_form`)."""
    info = card.get("compression") or {}
    return serving_form(str(info.get("backend", "auto")), str(info.get("encoding", "fp32")), model)


def encoded(model: nn.Module, encoding: str, backend_name: str) -> dict[str, torch.Tensor]:
    """The plain tensors an artifact stores for `model`."""
    if encoding == "fp32":
        return {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return encode(backend(backend_name, encoding.removeprefix("int8-")).state(model))


def weights_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """The safetensors file exactly as the artifact will hold it."""
    return save(state)
