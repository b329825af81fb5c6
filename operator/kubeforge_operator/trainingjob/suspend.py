"""Step: a suspended job holds no pods, whatever else is true; resuming clears the condition and
the active deadline counts again from the resume (as for a Kubernetes Job)."""

from __future__ import annotations

from kubeforge_api.conditions import is_true
from kubeforge_api.constants import ConditionType, Reason, State

from .context import Pass


def suspended(p: Pass) -> bool:
    if p.policy.suspend:
        p.delete(p.pods)
        p.set(ConditionType.SUSPENDED, True, Reason.SUSPENDED, "the job is suspended; its pods are deleted")
        p.set_if_present(ConditionType.RUNNING, False, Reason.SUSPENDED, "the job is suspended")
        p.status["state"], p.status["reason"] = State.SUSPENDED, Reason.SUSPENDED
        p.status.pop("startTime", None)
        return True
    if is_true(p.conds, ConditionType.SUSPENDED):
        p.set(ConditionType.SUSPENDED, False, Reason.RESUMED, "the job was resumed")
    return False
