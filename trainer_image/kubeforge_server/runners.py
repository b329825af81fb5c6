"""How the server runs a loaded model on a batch: named numpy inputs in, named numpy outputs out,
one function per task. Text is tokenized here, per batch, with the model's own tokenizer (truncated at
its max length, padded on the right to the batch's longest sequence, with an attention mask, so each
row's answer is what the model gives that text alone); 8-bit images are rescaled and normalised as
the model's image processor would; a torch.export program takes its inputs by name.

The model runs on the GPU when the pod has one (resources: nvidia.com/gpu), else on the CPU; int8
(quantized) models run on the CPU, where their kernels are."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from kubeforge_api.storage import ModelFormat
from kubeforge_trainer.formats import Loaded, Task

from .signature import IMAGE_INPUT, Inputs, Signature

RunFn = Callable[[Inputs], Inputs]


def runner(loaded: Loaded, sig: Signature) -> RunFn:
    """The function the batcher calls with a batch of requests' inputs."""
    device = _device(loaded.model)
    if loaded.task in (Task.TEXT_CLASSIFICATION, Task.CAUSAL_LM) and loaded.tokenizer is not None:
        return _text(loaded, loaded.model.to(device), device)
    if loaded.task == Task.IMAGE_CLASSIFICATION:
        return _image(loaded, loaded.model.to(device), device)
    if loaded.format == ModelFormat.TORCH_EXPORT:
        return _program(loaded, sig, device)
    return _tensors(loaded, sig, loaded.model.to(device), device)


def _device(model: torch.nn.Module) -> torch.device:
    quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    return torch.device("cuda" if torch.cuda.is_available() and not quantized else "cpu")


def _tensors(loaded: Loaded, sig: Signature, model: torch.nn.Module, device: torch.device) -> RunFn:
    """A Kubeforge model, or a transformers model on token ids: one input tensor, the logits out."""
    name, out_name = sig.inputs[0].name, sig.outputs[0].name
    hf = loaded.format == ModelFormat.HF_TRANSFORMERS

    def run(x: Inputs) -> Inputs:
        with torch.inference_mode():
            t = torch.from_numpy(x[name]).to(device)
            out = model(input_ids=t, attention_mask=torch.ones_like(t)).logits if hf else model(t)
            if sig.last_position:
                out = out[:, -1]
            if loaded.task == Task.TEXT_CLASSIFICATION:
                return _classified(loaded, out)
            return {out_name: out.float().cpu().numpy()}

    return run


def _text(loaded: Loaded, model: torch.nn.Module, device: torch.device) -> RunFn:
    tokenizer = loaded.tokenizer
    assert tokenizer is not None
    name = loaded.inputs[0].name
    accepted = set(inspect.signature(model.forward).parameters)
    pad = tokenizer.pad_token_id if isinstance(tokenizer.pad_token_id, int) else 0

    def run(x: Inputs) -> Inputs:
        texts = [b.decode("utf-8") for b in x[name].reshape(-1)]
        enc = tokenizer(texts, truncation=True, max_length=loaded.max_length)
        batch = _padded(enc, pad, accepted, device)
        lengths = batch["attention_mask"].sum(dim=1)
        with torch.inference_mode():
            logits = model(**batch).logits
            if loaded.task == Task.CAUSAL_LM:  # each row's last real token (padding is on the right)
                return {"logits": logits[torch.arange(len(texts), device=device), lengths - 1].float().cpu().numpy()}
            return _classified(loaded, logits)

    return run


def _padded(enc: Any, pad: int, accepted: set[str], device: torch.device) -> dict[str, torch.Tensor]:
    """The tokenizer's lists as tensors padded on the right, with the attention mask; only the
    fields the model's forward takes."""
    ids: list[list[int]] = enc["input_ids"]
    width = max(1, max(len(row) for row in ids))
    out: dict[str, torch.Tensor] = {}
    for field, rows in enc.items():
        if field not in accepted or field == "attention_mask":
            continue
        fill = pad if field == "input_ids" else 0
        out[field] = torch.tensor([row + [fill] * (width - len(row)) for row in rows], dtype=torch.long)
    out["attention_mask"] = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], dtype=torch.long)
    return {k: v.to(device) for k, v in out.items()}


def _image(loaded: Loaded, model: torch.nn.Module, device: torch.device) -> RunFn:
    pixels = loaded.inputs[0].name
    dtype = next(model.parameters()).dtype
    norm = loaded.image

    def run(x: Inputs) -> Inputs:
        with torch.inference_mode():
            if IMAGE_INPUT in x and norm is not None:
                t = torch.from_numpy(x[IMAGE_INPUT]).to(device).permute(0, 3, 1, 2).float()
                if norm.rescale is not None:
                    t = t * norm.rescale
                if norm.mean is not None and norm.std is not None:
                    mean = torch.tensor(norm.mean, device=device).view(1, -1, 1, 1)
                    std = torch.tensor(norm.std, device=device).view(1, -1, 1, 1)
                    t = (t - mean) / std
            else:
                t = torch.from_numpy(x[pixels]).to(device)
            return _classified(loaded, model(pixel_values=t.to(dtype)).logits)

    return run


def _classified(loaded: Loaded, logits: torch.Tensor) -> Inputs:
    """Logits and the label name of each row's largest."""
    labels = loaded.id2label or {}
    best = logits.argmax(dim=-1).cpu().tolist()
    names = np.empty(len(best), dtype=object)
    names[:] = [labels.get(i, str(i)).encode() for i in best]
    return {"logits": logits.float().cpu().numpy(), "label": names}


def _program(loaded: Loaded, sig: Signature, device: torch.device) -> RunFn:
    """A torch.export program: its inputs by name, its outputs (a tensor, a tuple or a dict) by name."""
    module, program = loaded.model, loaded.program
    assert program is not None and program.call_spec.in_spec is not None
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        module = move_to_device_pass(program, device).module()
    positional = [t.name for t in sig.inputs[:program.call_spec.in_spec.child(0).num_children]]
    keyword = [t.name for t in sig.inputs[len(positional):]]
    names = [t.name for t in sig.outputs]

    def run(x: Inputs) -> Inputs:
        with torch.inference_mode():
            t = {k: torch.from_numpy(v).to(device) for k, v in x.items()}
            out = module(*[t[k] for k in positional], **{k: t[k] for k in keyword})
        if isinstance(out, dict):
            values = [out[n] for n in names]
        elif isinstance(out, tuple | list):
            values = list(out)
        else:
            values = [out]
        return {n: v.detach().cpu().numpy() for n, v in zip(names, values, strict=True)}

    return run
