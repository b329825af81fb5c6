"""Step: a spec the typed models reject ends the job `Failed/InvalidSpec` (never a retry loop)."""

from __future__ import annotations

from kubeforge_api.compression import check_against_recipe
from kubeforge_api.conditions import is_true
from kubeforge_api.constants import ConditionType, Reason
from kubeforge_api.trainingjob import TrainingJobSpec
from pydantic import ValidationError

from .context import Pass

MAX_ERRORS = 5


def spec_errors(e: ValidationError) -> str:
    """One line per error, each naming its `spec.` path, no library boilerplate."""
    lines = []
    for err in e.errors()[:MAX_ERRORS]:
        where = ".".join(str(part) for part in err["loc"])
        lines.append(f"spec{'.' + where if where else ''}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def semantic_errors(spec: TrainingJobSpec) -> list[str]:
    """What the models accept field by field but the combination does not allow."""
    if spec.compression is None or spec.recipe is None:
        return []
    return check_against_recipe(spec.compression, spec.recipe.model, spec.recipe.dataset)


def invalid_spec(p: Pass) -> bool:
    try:
        spec = TrainingJobSpec.model_validate(p.job.get("spec") or {})
        errors = "; ".join(semantic_errors(spec)[:MAX_ERRORS])
    except ValidationError as e:
        errors = spec_errors(e)
    if not errors:
        p.valid_spec = spec
        return False
    if not (is_true(p.conds, ConditionType.FAILED) or is_true(p.conds, ConditionType.SUCCEEDED)):
        p.terminal(ConditionType.FAILED, Reason.INVALID_SPEC, errors)
    p.delete(p.pods)
    return True
