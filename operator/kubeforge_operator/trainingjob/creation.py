"""Steps that bring up an attempt: the old attempt's pods are gone first (never two live pods for
one rank), the restart back-off has elapsed, then whatever is missing is created. Names are
deterministic, so a restarted operator can never create a duplicate."""

from __future__ import annotations

from datetime import timedelta

from kubeforge_api.constants import Reason, State

from ..plan import Event, parse_ts, ts
from ..render.trainingjob import members, pod_name, render_pod, render_service
from .context import Config, Pass
from .nodes import force_fenced


def backoff(counted_failures: int, cfg: Config) -> float:
    """Delay before the next attempt: base, doubling per counted failure, capped."""
    return float(min(cfg.backoff_seconds * 2 ** max(counted_failures - 1, 0), cfg.backoff_max_seconds))


def old_attempt_gone(p: Pass) -> bool:
    if not p.stale:
        return False
    p.delete(p.stale)
    force_fenced(p)
    p.status["state"] = State.RESTARTING
    return True


def backoff_elapsed(p: Pass) -> bool:
    last = p.status.get("lastFailure") or {}
    failed_at = last.get("time")
    if not p.restarts or not failed_at or last.get("reason") in (Reason.NODE_LOST, Reason.EVICTED):  # not the job
        return False
    resume_at = parse_ts(failed_at) + timedelta(seconds=backoff(max(p.restarts - p.disruptions, 1), p.cfg))
    if p.now >= resume_at:
        return False
    p.status["state"] = State.RESTARTING
    p.plan.requeue((resume_at - p.now).total_seconds())
    return True


def create_missing(p: Pass) -> bool:
    if not p.service_exists and not p.service_expected:
        p.plan.create.append(render_service(p.ref))
    present = {v.name for v in p.current} | p.expected
    new = [render_pod(p.ref, p.spec, m, p.restarts, p.cfg.default_image, p.cfg.shm_size) for m in members(p.spec)
           if pod_name(p.ref.name, m.role, m.rank) not in present]
    p.plan.create.extend(new)
    if new or p.expected:
        p.status.setdefault("startTime", ts(p.now))
    if new and not present:  # no condition says so (Running's reason does): an event per attempt
        p.plan.events.append(Event("Normal", Reason.PODS_CREATED, f"created the pods of attempt {p.restarts}"))
    return False
