"""Quantized state dicts as plain tensors for safetensors (which stores no quantized dtypes and no
packed params): an int8 tensor becomes `KEY::qdata` (int8/uint8), `KEY::scale`, `KEY::zero_point`
and, per channel, `KEY::axis`; tuples (packed Linear params) become `KEY::0`, `KEY::1`. Decoding fills
the state dict of a freshly built quantized structure, so the loader never trusts a stored layout."""

from __future__ import annotations

from typing import Any

import torch

SEP = "::"
QUANT_PARTS = ("qdata", "scale", "zero_point", "axis")


class CodecError(ValueError):
    pass


def _encode(key: str, value: Any, out: dict[str, torch.Tensor]) -> None:
    if value is None or isinstance(value, torch.dtype):
        return  # rebuilt from the structure
    if isinstance(value, tuple | list):
        for i, item in enumerate(value):
            _encode(f"{key}{SEP}{i}", item, out)
    elif isinstance(value, torch.Tensor) and value.is_quantized:
        out[f"{key}{SEP}qdata"] = value.int_repr()
        if value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            out[f"{key}{SEP}scale"] = value.q_per_channel_scales().to(torch.float64)
            out[f"{key}{SEP}zero_point"] = value.q_per_channel_zero_points().to(torch.int64)
            out[f"{key}{SEP}axis"] = torch.tensor(value.q_per_channel_axis(), dtype=torch.int64)
        else:
            out[f"{key}{SEP}scale"] = torch.tensor(value.q_scale(), dtype=torch.float64)
            out[f"{key}{SEP}zero_point"] = torch.tensor(value.q_zero_point(), dtype=torch.int64)
    elif isinstance(value, torch.Tensor):
        out[key] = value.detach()
    else:
        raise CodecError(f"{key}: cannot store a {type(value).__name__}")


def encode(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Plain tensors for a (possibly quantized) state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        _encode(key, value, out)
    return {k: v.contiguous() for k, v in out.items()}


def _take(stored: dict[str, torch.Tensor], used: set[str], key: str) -> torch.Tensor:
    if key not in stored:
        raise CodecError(f"weights lack {key!r}")
    used.add(key)
    return stored[key]


def _decode(key: str, template: Any, stored: dict[str, torch.Tensor], used: set[str]) -> Any:
    if template is None or isinstance(template, torch.dtype):
        return template
    if isinstance(template, tuple | list):
        return type(template)(_decode(f"{key}{SEP}{i}", t, stored, used) for i, t in enumerate(template))
    if isinstance(template, torch.Tensor) and template.is_quantized:
        q = _take(stored, used, f"{key}{SEP}qdata")
        if q.dtype != template.int_repr().dtype or q.shape != template.shape:
            raise CodecError(f"{key}: stored {q.dtype} {tuple(q.shape)}, structure needs "
                             f"{template.int_repr().dtype} {tuple(template.shape)}")
        scale, zp = _take(stored, used, f"{key}{SEP}scale"), _take(stored, used, f"{key}{SEP}zero_point")
        if f"{key}{SEP}axis" in stored:
            axis = int(_take(stored, used, f"{key}{SEP}axis"))
            return torch._make_per_channel_quantized_tensor(q, scale.double(), zp.long(), axis)
        return torch._make_per_tensor_quantized_tensor(q, float(scale), int(zp))
    if isinstance(template, torch.Tensor):
        t = _take(stored, used, key)
        if t.shape != template.shape:
            raise CodecError(f"{key}: stored shape {tuple(t.shape)}, structure needs {tuple(template.shape)}")
        return t
    raise CodecError(f"{key}: unsupported {type(template).__name__} in the structure")


def decode(stored: dict[str, torch.Tensor], template: dict[str, Any]) -> dict[str, Any]:
    """A state dict shaped like `template` (a built structure's state dict) from stored tensors;
    every stored tensor must be used, so foreign or extra tensors are refused."""
    used: set[str] = set()
    state = {key: _decode(key, value, stored, used) for key, value in template.items()}
    extra = sorted(set(stored) - used)
    if extra:
        raise CodecError(f"weights hold tensors the structure has no place for: {extra[:5]}")
    return state


def stored_parameters(stored: dict[str, torch.Tensor]) -> int:
    """Parameter count of stored weights: values, not their quantization scales and zero points."""
    return sum(t.numel() for k, t in stored.items() if k.rsplit(SEP, 1)[-1] not in QUANT_PARTS[1:])
