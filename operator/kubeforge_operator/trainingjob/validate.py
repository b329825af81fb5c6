"""Step: a spec the typed models reject ends the job `Failed/InvalidSpec` (never a retry loop)."""

from __future__ import annotations

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


def invalid_spec(p: Pass) -> bool:
    try:
        p.valid_spec = TrainingJobSpec.model_validate(p.job.get("spec") or {})
        return False
    except ValidationError as e:
        if not (is_true(p.conds, ConditionType.FAILED) or is_true(p.conds, ConditionType.SUCCEEDED)):
            p.terminal(ConditionType.FAILED, Reason.INVALID_SPEC, spec_errors(e))
        p.delete(p.pods)
        return True
