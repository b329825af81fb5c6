"""Loading the parent of a compression run by the format of its directory: a Kubeforge artifact of a
built-in recipe, evaluated on the recipe's held-out split; a Hugging Face transformers directory,
evaluated on the user's own data (`compress.hf`); a torch.export program, to which no method applies
(its graph is fixed once exported)."""

from __future__ import annotations

from pathlib import Path

from kubeforge_api.compression import ArtifactRef
from kubeforge_api.storage import ModelFormat
from kubeforge_api.trainingjob import Recipe
from pydantic import ValidationError

from .. import artifacts
from ..context import ConfigError
from ..data import load as load_data
from ..evaldata import EvalSource
from ..formats.identity import FormatError, detect
from .evaluate import from_recipe
from .hf import load_hf
from .parent import CompressInputError, NoApplicableMethod, Parent, relative


def load(directory: Path, storage: Path, source: EvalSource | None) -> Parent:
    """The parent in `directory`, by its format."""
    try:
        fmt = detect(directory)
    except FormatError as e:
        raise CompressInputError(f"cannot compress {directory.name}: {e}") from None
    if fmt == ModelFormat.KUBEFORGE:
        return _kubeforge(directory, storage, source)
    if fmt == ModelFormat.HF_TRANSFORMERS:
        return load_hf(directory, relative(directory, storage), source)
    raise NoApplicableMethod(
        f"{directory.name} is a torch.export program: no compression method applies to it (its graph is fixed "
        "once exported); compress the model before exporting it, or bring it as a Hugging Face directory")


def _kubeforge(parent: Path, storage: Path, source: EvalSource | None) -> Parent:
    try:
        card, model = artifacts.load_model(parent)
    except artifacts.ArtifactError as e:
        raise CompressInputError(f"cannot compress {parent.name}: {e}") from None
    encoding = (card.get("compression") or {}).get("encoding", "fp32")
    if encoding != "fp32":
        origin = ((card.get("lineage") or {}).get("parent") or {}).get("path")
        raise CompressInputError(
            f"cannot compress {parent.name}: it is already compressed ({encoding}, by "
            f"{card['compression'].get('method', '?')}); compress the fp32 model it was made from"
            + (f" ({origin})" if origin else ""))
    if not card.get("recipe"):
        raise CompressInputError(f"cannot compress {parent.name}: its model card names no recipe to evaluate it with")
    try:
        recipe = Recipe.model_validate(card["recipe"])
        data = load_data(recipe, storage)
    except (ConfigError, ValidationError) as e:
        raise CompressInputError(f"cannot compress {parent.name}: {e}") from None
    if card.get("dataset", {}).get("digest") not in (None, data.digest):
        raise CompressInputError(f"the dataset the recipe names differs from the one {parent.name} was trained on")
    ref = ArtifactRef(path=relative(parent, storage), digest=card["weights"]["digest"],
                      size_bytes=sum(f.stat().st_size for f in parent.iterdir() if f.is_file()))
    notes = [f"{parent.name} is evaluated on its recipe's held-out split; the evaluation data given applies to "
             "models no recipe describes"] if source else []
    return Parent(parent, ModelFormat.KUBEFORGE, model, card["architecture"], from_recipe(data, recipe), ref,
                  (parent / card["weights"]["file"]).stat().st_size, card, recipe, data, notes)
