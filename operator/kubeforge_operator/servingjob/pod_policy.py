"""Step: a pod template the operator's settings forbid is `Ready=False/PodPolicyViolation`, naming
the field; nothing is rolled out with it, and what serves already keeps serving."""

from __future__ import annotations

from kubeforge_api.servingjob import ServingConditionType, ServingReason

from ..podpolicy import violation
from .context import ServingPass


def pod_policy_violated(p: ServingPass) -> bool:
    forbidden = violation(p.spec.pod_template, p.cfg.pod_policy)
    if forbidden is None:
        return False
    p.condition(ServingConditionType.READY, False, ServingReason.POD_POLICY_VIOLATION, forbidden)
    return True
