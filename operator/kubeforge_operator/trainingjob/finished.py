"""Step: a finished job (Succeeded or Failed) only tidies up: pods as `cleanPodPolicy` says (the
pod that failed it stays for its logs), and the job itself once `ttlSecondsAfterFinished` passed."""

from __future__ import annotations

from datetime import timedelta

from kubeforge_api.conditions import is_true
from kubeforge_api.constants import ConditionType

from ..plan import parse_ts
from .context import Pass


def is_finished(p: Pass) -> bool:
    return is_true(p.conds, ConditionType.SUCCEEDED) or is_true(p.conds, ConditionType.FAILED)


def finished(p: Pass) -> bool:
    if not is_finished(p):
        return False
    failed_pod = (p.status.get("lastFailure") or {}).get("pod", "") if is_true(p.conds, ConditionType.FAILED) else ""
    p.cleanup(p.policy.clean_pod_policy, keep=failed_pod)
    ttl = p.policy.ttl_seconds_after_finished
    if ttl is not None and p.status.get("completionTime"):
        expiry = parse_ts(p.status["completionTime"]) + timedelta(seconds=ttl)
        if p.now >= expiry:
            p.plan.delete_self = True
        else:
            p.plan.requeue((expiry - p.now).total_seconds())
    return True
