"""Step: a spec the typed models reject is `Ready=False/InvalidSpec`, naming the fields; nothing is
rolled out with it, and what serves already keeps serving."""

from __future__ import annotations

from kubeforge_api.servingjob import ServingConditionType, ServingJobSpec, ServingReason
from pydantic import ValidationError

from ..spec_errors import spec_errors
from .context import ServingPass


def invalid_spec(p: ServingPass) -> bool:
    try:
        p.valid_spec = ServingJobSpec.model_validate(p.world.obj.get("spec") or {})
    except ValidationError as e:
        p.condition(ServingConditionType.READY, False, ServingReason.INVALID_SPEC, spec_errors(e, ServingJobSpec))
        return True
    return False
