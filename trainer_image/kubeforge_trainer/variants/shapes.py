"""The layer shapes of a structurally pruned model. Pruning (in the compression pipeline) records
each changed layer's weight shape [out, in, ...] in the card's `architecture.shapes`; the loader
builds the family's model and replaces those layers by ones of the recorded shapes before the weights
are loaded, so a pruned model is rebuilt from its card alone."""

from __future__ import annotations

from torch import nn


def resize(module: nn.Module, out_f: int, in_f: int) -> nn.Module:
    """A fresh layer like `module` (Linear or Conv2d) with `out_f` outputs and `in_f` inputs."""
    if isinstance(module, nn.Linear):
        return nn.Linear(in_f, out_f, bias=module.bias is not None)
    assert isinstance(module, nn.Conv2d)
    return nn.Conv2d(in_f, out_f, module.kernel_size, module.stride, module.padding,  # type: ignore[arg-type]
                     module.dilation, module.groups, bias=module.bias is not None)  # type: ignore[arg-type]


def replace(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` in place of `model`'s submodule `name` (a dotted path)."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def apply_shapes(model: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Replace layers by ones of the recorded weight shapes [out, in, ...] (fresh numbers)."""
    for name, shape in shapes.items():
        replace(model, name, resize(model.get_submodule(name), shape[0], shape[1]))
    return model
