"""Step, the last: either every pod of the attempt runs (`Running`), or the status says why not,
with the most actionable reason any pod gives (Unschedulable before ImagePullBackOff before ...),
and the startup deadline is checked. An elastic job runs (`Resized`) on fewer workers than
`spec.nodes` while node rank 0 and `minNodes` of them run."""

from __future__ import annotations

from kubeforge_api.conditions import find, is_true
from kubeforge_api.constants import ConditionType, Reason, State

from ..observe import WAITING
from ..render.trainingjob import members
from .context import Pass
from .deadlines import startup_deadline
from .elastic import running_elastic

# Preference when several pods say why they are not running: the most actionable first.
BLOCKED_ORDER = [Reason.UNSCHEDULABLE, Reason.IMAGE_PULL_BACKOFF, Reason.CONFIG_ERROR, Reason.CRASH_LOOP_BACKOFF,
                 Reason.CONTAINER_CREATING]


def _all_running(p: Pass) -> bool:
    current = p.current
    return len(current) == len(members(p.spec)) and all(v.running or v.phase == "Succeeded" for v in current)


def _still_true(p: Pass, reason: str, message: str, blocked: list[tuple[str, str]]) -> str:
    """The condition's current message while it still holds for the same reason: which of several
    blocked pods is named is no news, so pods turning Unschedulable one by one (in any order) make
    one status write, not one per pod that sorts before the one named."""
    old = find(p.old.get("conditions") or [], ConditionType.RUNNING)
    if old and old.get("reason") == reason and (reason, old.get("message")) in blocked:
        return str(old["message"])
    return message


def running_or_why_not(p: Pass) -> bool:
    resized = running_elastic(p)
    if resized is not None:  # an elastic job trains on with fewer workers while the rest wait
        p.set(ConditionType.RUNNING, True, Reason.RESIZED, resized)
        p.status["state"], p.status["reason"] = State.RUNNING, Reason.RESIZED
        p.plan.requeue(p.cfg.progress_interval_seconds)
        return True
    if _all_running(p):
        n = len(p.current)
        p.set(ConditionType.RUNNING, True, Reason.ALL_RUNNING, f"all {n} pods are running")
        p.set_if_present(ConditionType.RESTARTING, False, Reason.RESTARTED, f"attempt {p.restarts} is running")
        p.status["state"], p.status["reason"] = State.RUNNING, Reason.ALL_RUNNING
        p.plan.requeue(p.cfg.progress_interval_seconds)  # poll rank 0's progress (a command job's script may serve it)
        return True
    blocked = sorted((v.blocked for v in p.current if v.blocked), key=lambda b: BLOCKED_ORDER.index(Reason(b[0])))
    reason, message = blocked[0] if blocked else (str(Reason.CONTAINER_CREATING), WAITING)
    message = _still_true(p, reason, message, blocked)
    p.set(ConditionType.RUNNING, False, reason, message)
    if is_true(p.conds, ConditionType.RESTARTING):
        p.status["state"] = State.RESTARTING
    else:
        p.status["state"] = State.PENDING if reason == Reason.UNSCHEDULABLE else State.CREATED
    p.status["reason"] = reason
    startup_deadline(p, message)
    return True
