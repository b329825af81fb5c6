"""The model a compression run starts from (its parent) as the run sees it, whatever its format: the
model, what it is evaluated and timed on, its reference for the report and the lineage, and which
methods apply to it; and the errors that stop a run before anything is measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeforge_api.compression import ArtifactRef, Method
from kubeforge_api.storage import ModelFormat
from kubeforge_api.trainingjob import Recipe
from torch import nn

from ..data import Data
from .evaluate import Evaluation


class CompressInputError(Exception):
    """The parent artifact, its data or the spec cannot be used (exit 78, never retried)."""


class NoApplicableMethod(CompressInputError):
    """No method can compress this model at all (a torch.export program): the stage's verdict, not an error."""


@dataclass
class Parent:
    """The model to compress and everything a run needs to know about it."""

    directory: Path
    format: ModelFormat
    model: nn.Module
    arch: dict[str, Any]  # the architecture a candidate's card starts from
    evaluation: Evaluation
    ref: ArtifactRef  # the report's `parent` and the candidates' lineage
    weights_bytes: int
    card: dict[str, Any] = field(default_factory=dict)  # a Kubeforge parent's model card
    recipe: Recipe | None = None
    data: Data | None = None
    notes: list[str] = field(default_factory=list)  # warnings for the report

    def inapplicable(self, method: Method) -> str:
        """Why `method` cannot run on this parent ('' when it can)."""
        if self.format == ModelFormat.KUBEFORGE or (method.quantize and method.quantize.mode == "dynamic"):
            return ""
        return (f"{method.label()} applies to models of the built-in recipes (it needs their training data and "
                "layer structure); a Hugging Face model can be compressed with quantize (dynamic int8)")


def relative(directory: Path, storage: Path) -> str:
    try:
        return str(directory.resolve().relative_to(storage.resolve()))
    except ValueError:
        raise CompressInputError(f"{directory} is not under the storage root {storage}") from None
