"""int8 quantization behind one adapter. `EagerBackend` uses torch.ao.quantization (deprecated but
the fastest CPU path in eager mode: fbgemm/x86 int8 kernels; activations 8-bit where the CPU allows,
`full_range`); `TorchaoBackend` uses torchao's
`quantize_` (per-row int8 weights, int8 dynamic activations), which is only fast under
`torch.compile`: `serving` gives the form each back end is timed and served in (torchao's: compiled
with inductor freezing, which folds the weights and their scales into the graph as constants; it
cut the encoder's batch-1 time by ~10 %, to par with the eager back end). Both store the same
artifact layout, so either can rebuild the other's artifact, and torchao can take over when
torch.ao disappears.

Each backend has two halves: `quantize` (fp32 model + calibration data -> int8 model) and
`structure` (fp32 model of the same architecture -> an int8 model with placeholder numbers, whose
state dict the loader then fills from the artifact)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from .codec import SEP, CodecError, decode


class QuantizeError(ValueError):
    """This model cannot be quantized this way (a user error: reported, never a traceback)."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.ao warns on import and use that it is deprecated; we know (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*reduce_range.*", category=UserWarning)
        yield


def engine() -> str:
    engines = torch.backends.quantized.supported_engines
    return "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else "qnnpack"


class Backend(Protocol):
    name: str

    def dynamic(self, model: nn.Module) -> nn.Module: ...
    def static(self, model: nn.Module, calibration: torch.Tensor) -> nn.Module: ...
    def state(self, model: nn.Module) -> dict[str, Any]: ...
    def rebuild(self, fp32: nn.Module, mode: str, stored: dict[str, torch.Tensor]) -> nn.Module: ...
    def serving(self, model: nn.Module) -> nn.Module: ...


class StaticInt8(nn.Module):
    """Quantize the input, run the fused int8 body, dequantize the output."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.quant, self.body, self.dequant = QuantStub(), body, DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dequant(self.body(self.quant(x)))
        return out


log = logging.getLogger("kubeforge.compress")
STATIC_LAYERS = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d,
                 nn.AdaptiveAvgPool2d)


def fusable(body: nn.Sequential) -> list[list[str]]:
    """conv+bn+relu, conv+bn, conv+relu and linear+relu runs: each becomes one int8 kernel (a lone
    BatchNorm or ReLU between int8 layers would cost a pass over the activations)."""
    names, mods = list(body._modules), list(body._modules.values())
    runs, i = [], 0
    while i < len(names):
        kinds = [type(m) for m in mods[i : i + 3]]
        n = 3 if kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] else 2 if kinds[:2] in (
            [nn.Conv2d, nn.BatchNorm2d], [nn.Conv2d, nn.ReLU], [nn.Linear, nn.ReLU]) else 1
        if n > 1:
            runs.append(names[i : i + n])
        i += n
    return runs


@functools.cache
def full_range() -> bool:
    """Whether dynamic int8 activations may use all 8 bits on this CPU. fbgemm's AVX2 kernels add pairs
    of u8 x s8 products in 16 bits, which saturate unless activations keep to 7 bits (torch's dynamic
    Linear always asks for that, `reduce_range=True`); with AVX512-VNNI the products accumulate in 32
    bits, so the eighth bit is free and halves every activation's rounding error (a SwiGLU Llama's
    perplexity rose 6.1 % in int8 with 7-bit activations, 1.0 % with 8; its MLP down-projection's input
    has the outliers)."""
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)  # a private helper: absent means unknown, so 7 bits
    return vnni is not None and bool(vnni())


@functools.cache
def dynamic_linear() -> type[nn.Module]:
    """torch.ao's dynamic int8 Linear, its activations 8-bit where `full_range` allows (same weights
    and state dict; made on first use, since importing torch.ao warns)."""
    with quiet():
        from torch.ao.nn.quantized.dynamic import Linear

    class DynamicLinear(Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self._packed_params.dtype != torch.qint8:
                fp16: torch.Tensor = super().forward(x)  # type: ignore[no-untyped-call]
                return fp16
            y: torch.Tensor = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                                 reduce_range=not full_range())
            return y.to(x.dtype)

    return DynamicLinear


class EagerBackend:
    name = "eager"

    def dynamic(self, model: nn.Module, keep_fp32: tuple[str, ...] = ()) -> nn.Module:
        """Every Linear/LSTM in int8, except the submodules named in `keep_fp32`."""
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
        from torch.ao.quantization.quantization_mappings import get_default_dynamic_quant_module_mappings

        torch.backends.quantized.engine = engine()
        with quiet():
            qconfig: dict[Any, Any] = {nn.Linear: per_channel_dynamic_qconfig, nn.LSTM: default_dynamic_qconfig,
                                       **dict.fromkeys(keep_fp32)}
            mapping = {**get_default_dynamic_quant_module_mappings(), nn.Linear: dynamic_linear()}
            out: nn.Module = quantize_dynamic(model.eval(), qconfig, dtype=torch.qint8,  # type: ignore[no-untyped-call]
                                              mapping=mapping)
        return out

    def static(self, model: nn.Module, calibration: torch.Tensor) -> nn.Module:
        from torch.ao.quantization import convert, fuse_modules, get_default_qconfig, prepare

        if not isinstance(model, nn.Sequential) or not all(
                isinstance(m, STATIC_LAYERS) or type(m).__name__ == "Reshape" for m in model):
            raise QuantizeError("static int8 supports sequential conv/bn/linear/relu/pool models (mlp, cnn); "
                                "use dynamic")
        torch.backends.quantized.engine = engine()
        with quiet():
            body = fuse_modules(model.eval(), fusable(model))  # type: ignore[no-untyped-call]
            wrapped = StaticInt8(body).eval()
            wrapped.qconfig = get_default_qconfig(engine())  # type: ignore[no-untyped-call]
            prepared = prepare(wrapped)  # type: ignore[no-untyped-call]
            with torch.no_grad():
                for i in range(0, len(calibration), 64):
                    prepared(calibration[i : i + 64])
            out: nn.Module = convert(prepared)  # type: ignore[no-untyped-call]
        return out

    def state(self, model: nn.Module) -> dict[str, Any]:
        return dict(model.state_dict())

    def serving(self, model: nn.Module) -> nn.Module:
        """fbgemm/x86 int8 kernels are fast in eager mode: the model as it is."""
        return model

    def rebuild(self, fp32: nn.Module, mode: str, stored: dict[str, torch.Tensor]) -> nn.Module:
        static = mode != "dynamic"
        structure = self.static(fp32, torch.zeros(1, *_input_shape(fp32))) if static else self.dynamic(fp32)
        template = structure.state_dict()
        state = OrderedDict(decode(stored, template))
        state._metadata = template._metadata  # type: ignore[attr-defined]  # module versions pick the layout
        with quiet():
            structure.load_state_dict(state, strict=True)
        return structure.eval()


def _input_shape(model: nn.Module) -> tuple[int, ...]:
    first = next(m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d))
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    reshape = next((m for m in model.modules() if type(m).__name__ == "Reshape"), None)
    if reshape is not None:
        shape: tuple[int, ...] = reshape.shape  # type: ignore[assignment]
        return (int(torch.tensor(shape).prod()),)
    raise QuantizeError("cannot infer the input shape for static quantization")


def torchao_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def int_mm_fast() -> bool:
    """Whether torch's CPU int8 matmul (`torch._int_mm`, which torchao's int8 linear calls, eager and
    compiled alike) runs oneDNN's kernel here. torch dispatches it to oneDNN only when oneDNN is
    enabled and the CPU has AVX512-VNNI; otherwise it runs a scalar triple loop, measured 55x slower
    than the fp32 matmul of the same shape (so a torchao int8 model is many times slower than fp32)."""
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)  # a private helper: absent means unknown
    return bool(torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
                and torch.backends.mkldnn.enabled
                and (vnni is None or vnni()))


def slow_int8_cause(name: str) -> str:
    """Why the int8 back end `name` may be off its fast path on this machine ('' when nothing is known)."""
    if name != "torchao":
        return ""
    versions = f"torch {torch.__version__.split('+')[0]}, torchao {package_version('torchao')}"
    if not int_mm_fast():
        return f"{versions}: this CPU has no AVX512-VNNI (or oneDNN is off), so torch's int8 matmul runs a scalar loop"
    return versions


def package_version(package: str) -> str:
    """The installed version of `package`, or 'not installed'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


class TorchaoBackend:
    """torchao `Int8DynamicActivationInt8WeightConfig`; its weights are `Int8Tensor`s (qdata + per-row
    scale), stored in the same layout as the eager back end (zero points 0, axis 0)."""

    name = "torchao"

    def dynamic(self, model: nn.Module) -> nn.Module:
        if not torchao_available():
            raise QuantizeError("backend torchao: the torchao package is not installed in this image")
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        with quiet():
            quantize_(model.eval(), Int8DynamicActivationInt8WeightConfig())
        return model

    def static(self, model: nn.Module, calibration: torch.Tensor) -> nn.Module:
        raise QuantizeError("backend torchao supports dynamic mode only (static: backend eager)")

    def serving(self, model: nn.Module) -> nn.Module:
        """The model under `torch.compile` with inductor freezing (inference only: the weights become
        graph constants, so the int8 matmuls' scale handling and the fused activation-quantizing
        epilogues are folded at compile time). Compiles on the first call (20-90 s on a cold cache).
        Without a C++ compiler (inductor's CPU code needs one) the model stays eager."""
        if shutil.which(os.environ.get("CXX", "g++")) is None:
            return model
        return Frozen(model.eval())

    def state(self, model: nn.Module) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in model.state_dict().items():
            if hasattr(value, "qdata") and hasattr(value, "scale"):
                out[f"{key}{SEP}qdata"] = value.qdata
                out[f"{key}{SEP}scale"] = value.scale.reshape(-1).to(torch.float64)
                out[f"{key}{SEP}zero_point"] = torch.zeros(value.qdata.shape[0], dtype=torch.int64)
                out[f"{key}{SEP}axis"] = torch.tensor(0, dtype=torch.int64)
            else:
                out[key] = value
        return out

    def rebuild(self, fp32: nn.Module, mode: str, stored: dict[str, torch.Tensor]) -> nn.Module:
        """Quantize the fp32 structure, then copy the stored int8 values and scales into its weights."""
        structure = self.dynamic(fp32)
        template = self.state(structure)
        state = decode(stored, {k: v for k, v in template.items()})
        with torch.no_grad():
            for key, value in structure.state_dict().items():
                target = state.get(key)
                if hasattr(value, "qdata"):
                    value.qdata.copy_(state[f"{key}{SEP}qdata"])
                    value.scale.copy_(state[f"{key}{SEP}scale"].reshape(value.scale.shape))
                elif target is not None:
                    value.copy_(target)
                else:
                    raise CodecError(f"weights lack {key!r}")
        return structure.eval()


class Frozen(nn.Module):
    """A model under `torch.compile` whose compilations run with inductor freezing: the setting is
    patched around each call (a few microseconds), since `torch.compile(options=...)` was seen to
    reuse a cached graph compiled without it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.eager = model
        self.compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]
        self.compile_failed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch._inductor import config

        if not self.compile_failed:
            try:
                with config.patch(freezing=True):
                    out: torch.Tensor = self.compiled(x)
                return out
            except Exception as e:  # inductor needs a working C++ toolchain and a writable cache
                first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
                log.warning("torch.compile failed, the model runs eagerly from now on: %s", first_line[:200])
                self.compile_failed = True
        eager: torch.Tensor = self.eager(x)
        return eager


def backend(name: str, mode: str) -> Backend:
    """The back end for a spec's `backend` (auto: eager while torch.ao ships, else torchao)."""
    if name == "torchao" or (name == "auto" and mode == "dynamic" and not _eager_available()):
        return TorchaoBackend()
    if not _eager_available():
        raise QuantizeError("this torch has no torch.ao.quantization; use backend torchao (dynamic)")
    return EagerBackend()


def loader(name: str, mode: str) -> Backend:
    """The back end that rebuilds an artifact made by `name`: the same one when installed, else the
    other (both store per-row int8 weights with scales, so either can serve a dynamic artifact)."""
    if name == "torchao" and not torchao_available() and mode == "dynamic" and _eager_available():
        return EagerBackend()
    if name == "eager" and not _eager_available() and mode == "dynamic":
        return TorchaoBackend()
    return backend(name or "auto", mode)


def _eager_available() -> bool:
    engines = torch.backends.quantized.supported_engines
    return importlib.util.find_spec("torch.ao.quantization") is not None and ("x86" in engines or "fbgemm" in engines)
