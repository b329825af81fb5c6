"""Steps: `activeDeadlineSeconds` (from the start, outranks failures and progress) and
`startupDeadlineSeconds` (pods that never get running, checked while they are not)."""

from __future__ import annotations

from datetime import datetime, timedelta

from kubeforge_api.constants import Reason

from ..plan import parse_ts
from .context import Pass


def _expired(p: Pass, since: datetime, seconds: int) -> bool:
    expiry = since + timedelta(seconds=seconds)
    if p.now >= expiry:
        return True
    p.plan.requeue((expiry - p.now).total_seconds())
    return False


def active_deadline(p: Pass) -> bool:
    limit = p.policy.active_deadline_seconds
    if not limit or not p.status.get("startTime") or not _expired(p, parse_ts(p.status["startTime"]), limit):
        return False
    return p.fail(Reason.DEADLINE_EXCEEDED, f"the job ran longer than activeDeadlineSeconds={limit}", kill_all=True)


def startup_deadline(p: Pass, why: str) -> bool:
    """Called while pods are not all running; `why` is the most actionable reason seen."""
    limit = p.policy.startup_deadline_seconds
    if not limit:
        return False
    since = min((parse_ts(v.created) for v in p.current if v.created), default=p.now)
    if not _expired(p, since, limit):
        return False
    return p.fail(Reason.STARTUP_DEADLINE_EXCEEDED,
                  f"pods were not running within startupDeadlineSeconds={limit}: {why}", kill_all=True)
