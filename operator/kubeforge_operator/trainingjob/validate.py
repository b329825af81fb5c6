"""Step: a spec the typed models reject ends the job `Failed/InvalidSpec` (never a retry loop)."""

from __future__ import annotations

import copy
from collections import OrderedDict

from kubeforge_api.compression import check_against_recipe
from kubeforge_api.conditions import is_true
from kubeforge_api.constants import ConditionType, Reason
from kubeforge_api.trainingjob import TrainingJobSpec
from pydantic import ValidationError

from ..plan import Obj
from ..spec_errors import MAX_ERRORS, spec_errors
from .context import Pass


def semantic_errors(spec: TrainingJobSpec) -> list[str]:
    """What the models accept field by field but the combination does not allow."""
    if spec.compression is None or spec.recipe is None:
        return []
    return check_against_recipe(spec.compression, spec.recipe.model, spec.recipe.dataset)


class _Validated:
    """The last verdict per job: a spec changes only with its generation, and a pass runs on every
    watch event of the job or its pods, so the whole spec is validated once per generation (the
    cached verdict is used only while the spec still compares equal)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[str, int], tuple[Obj, TrainingJobSpec | None, str]] = OrderedDict()

    def __call__(self, job: Obj) -> tuple[TrainingJobSpec | None, str]:
        raw = job.get("spec") or {}
        key = (str(job["metadata"].get("uid", "")), int(job["metadata"].get("generation", 0)))
        hit = self.entries.get(key)
        if hit is not None and hit[0] == raw:
            self.entries.move_to_end(key)
            return hit[1], hit[2]
        spec, errors = _validate(raw)
        self.entries[key] = (copy.deepcopy(raw), spec, errors)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return spec, errors


def _validate(raw: Obj) -> tuple[TrainingJobSpec | None, str]:
    try:
        spec = TrainingJobSpec.model_validate(raw)
    except ValidationError as e:
        return None, spec_errors(e, TrainingJobSpec)
    return spec, "; ".join(semantic_errors(spec)[:MAX_ERRORS])


validated = _Validated()


def invalid_spec(p: Pass) -> bool:
    spec, errors = validated(p.job)
    if spec is not None and not errors:
        p.valid_spec = spec
        return False
    if not (is_true(p.conds, ConditionType.FAILED) or is_true(p.conds, ConditionType.SUCCEEDED)):
        p.terminal(ConditionType.FAILED, Reason.INVALID_SPEC, errors)
    p.delete(p.pods)
    return True
