"""Prometheus metrics of the operator (served on settings.metrics_port), labelled by kind."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from .plan import Obj
from .transitions import state_of

JOB_TRANSITIONS = Counter("kubeforge_job_transitions_total",
                          "Objects entering a state (Created, Restarted, Succeeded, Failed, Ready...)",
                          ["kind", "namespace", "state"])
RECONCILE_SECONDS = Histogram(
    "kubeforge_reconcile_duration_seconds", "Time of one reconcile pass", ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
API_WRITES = Counter("kubeforge_api_writes_total", "Mutating API requests made by the operator", ["verb", "kind"])


def count_transition(kind: str, ns: str, old: Obj, new: Obj) -> None:
    """Count a status write that moved the object into a new state or restarted it."""
    if state_of(new) != state_of(old) and state_of(new):
        JOB_TRANSITIONS.labels(kind, ns, state_of(new)).inc()
    if new.get("restartCount", 0) > old.get("restartCount", 0):
        JOB_TRANSITIONS.labels(kind, ns, "Restarted").inc()
