"""Step: a pod template the operator's settings forbid (a priority class, a toleration or node key,
imagePullSecrets) fails the job `PodPolicyViolation`, naming the field; no pod is ever created."""

from __future__ import annotations

from kubeforge_api.constants import Reason

from ..podpolicy import violation
from .context import Pass


def pod_policy_violated(p: Pass) -> bool:
    if p.cfg.pod_policy is None:
        return False
    problem = violation(p.spec.pod_template, p.cfg.pod_policy)
    return problem is not None and p.fail(Reason.POD_POLICY_VIOLATION, problem, kill_all=True)
