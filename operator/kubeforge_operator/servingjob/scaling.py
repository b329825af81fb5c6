"""Step: autoscaling on a language model's own load (`spec.autoscaling.metric` waitingRequests or
kvCacheUsage), the HorizontalPodAutoscaler's way but without one: the probe reads the ready servers'
gauges; the recommendation is ceil(servers read x average / target), unchanged within a 10 %
tolerance of the target, clamped to min and max; the replica count then follows the stabilization
windows (up to the lowest recommendation of the scale-up window, down to the highest of the
scale-down window). The recommendations live in `status.autoscaling`, bounded (one entry per change,
kept while a window may need it), so the decision stays pure and a restarted operator loses nothing.
The count (main and canary together) is what the rollout step gives the Deployments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from kubeforge_api.servingjob import (
    MAX_RECOMMENDATIONS,
    Autoscaling,
    AutoscalingStatus,
    Recommendation,
    ServingReason,
)

from ..plan import Event, parse_ts, ts
from .context import ServingPass

TOLERANCE = 0.1  # the HPA's: a ratio to the target within 10 % of 1 changes nothing


def recommend(a: Autoscaling, values: Sequence[float], current: int) -> int:
    """Replicas for the servers' readings: ceil(len x average / target), `current` within the tolerance
    (or without readings), always within min and max."""
    if not values:
        return clamp(a, current)
    ratio = sum(values) / len(values) / a.target
    if abs(ratio - 1) <= TOLERANCE + 1e-9:  # 2.2 / 2 is 1.1000000000000001
        return clamp(a, current)
    return clamp(a, math.ceil(len(values) * ratio - 1e-9))


def clamp(a: Autoscaling, replicas: int) -> int:
    return max(a.min_replicas, min(a.max_replicas, replicas))


def in_window(recs: Sequence[Recommendation], now: datetime, seconds: int) -> list[int]:
    """The recommendations in force during the last `seconds`: those made since, and the one in force
    when the window began (each holds until the next)."""
    start = now - timedelta(seconds=seconds)
    before = [r for r in recs if parse_ts(r.time) <= start]
    return [r.replicas for r in [*before[-1:], *(r for r in recs if parse_ts(r.time) > start)]]


def stabilized(a: Autoscaling, recs: Sequence[Recommendation], now: datetime, current: int) -> int:
    """Up to the lowest recommendation of the scale-up window, down to the highest of the scale-down
    window, else `current`."""
    up = min(in_window(recs, now, a.scale_up_stabilization_seconds), default=current)
    down = max(in_window(recs, now, a.scale_down_stabilization_seconds), default=current)
    if current < up:
        return up
    if current > down:
        return down
    return current


def remember(a: Autoscaling, recs: Sequence[Recommendation], now: datetime, replicas: int) -> list[Recommendation]:
    """`recs` with `replicas` recommended at `now` (a new entry only when it changes), less what no window
    can need any more; at most MAX_RECOMMENDATIONS, the newest."""
    out = list(recs)
    if not out or out[-1].replicas != replicas:
        out.append(Recommendation(time=ts(now), replicas=replicas))
    longest = max(a.scale_up_stabilization_seconds, a.scale_down_stabilization_seconds)
    start = now - timedelta(seconds=longest)
    first = max((i for i, r in enumerate(out) if parse_ts(r.time) <= start), default=0)
    return out[first:][-MAX_RECOMMENDATIONS:]


def _previous(p: ServingPass, a: Autoscaling) -> AutoscalingStatus:
    old = p.old.get("autoscaling")
    prev = AutoscalingStatus.model_validate(old) if old else None
    if prev is None or prev.metric != a.metric:  # a new metric starts afresh, from the replicas that exist
        return AutoscalingStatus(metric=a.metric, desired_replicas=clamp(a, int(p.old.get("replicas") or 0)))
    return prev


def _rescaled(p: ServingPass, a: Autoscaling, before: int, after: int, average: float | None) -> None:
    load = "no reading" if average is None else f"{a.metric.value} {average:g} per replica, target {a.target:g}"
    p.plan.events.append(Event("Normal", ServingReason.SUCCESSFUL_RESCALE,
                               f"New size: {after} (was {before}); {load}"))


def scaled_on_load(p: ServingPass) -> bool:
    a = p.spec.autoscaling
    if p.load_warning:  # that server is left out; the job reconciles on
        p.plan.events.append(Event("Warning", ServingReason.METRICS_ENDPOINT_MISBEHAVING, p.load_warning))
    if a is None or not a.on_server_metrics or p.spec.suspend or p.stopped is not None:
        p.status.pop("autoscaling", None)
        return False
    prev = _previous(p, a)
    current = clamp(a, prev.desired_replicas)
    recs, average, measured = list(prev.recommendations), prev.current, prev.replicas_measured
    if p.load is not None:  # a fresh reading this pass; without a value from any server nothing is recommended
        if p.load:
            recs = remember(a, recs, p.world.now, recommend(a, p.load, current))
        average = round(sum(p.load) / len(p.load), 3) if p.load else None
        measured = len(p.load)
    desired = stabilized(a, recs, p.world.now, current)
    last = prev.last_scale_time
    if desired != prev.desired_replicas:
        last = ts(p.world.now)
        _rescaled(p, a, prev.desired_replicas, desired, average)
    p.scaled_replicas = desired
    p.status["autoscaling"] = AutoscalingStatus(
        metric=a.metric, current=average, replicas_measured=measured, desired_replicas=desired,
        last_scale_time=last, recommendations=recs).dump()
    p.plan.requeue(p.cfg.autoscaling_sync_seconds)
    return False
