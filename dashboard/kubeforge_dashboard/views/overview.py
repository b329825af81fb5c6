"""The overview's view model: one row per TrainingJob and ServingJob (state, progress with ETA,
size, restarts, age, and the reason when it is not healthy), filtering, sorting and a count per
state. Pure: typed API models and `now` in, rows out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from kubeforge_api.constants import State
from kubeforge_api.meta import Condition
from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob

from ..format import age_seconds, badge, duration

TRAINING, SERVING = "TrainingJob", "ServingJob"
HEALTHY_REASONS = frozenset({"PodsCreated", "AllPodsRunning", "Completed", "Resumed", "ModelLoaded", "Created", ""})
UNHEALTHY_STATES = frozenset({State.PENDING, State.FAILED, State.RESTARTING, State.INTERRUPTED, "NotReady",
                              "Degraded"})
SORT_KEYS = ("age", "name", "state", "progress", "restarts")
TRAINING_PAGE, SERVING_PAGE = "training", "serving"


@dataclass(frozen=True)
class JobRow:
    kind: str
    namespace: str
    name: str
    state: str
    badge: str
    progress: float | None  # 0..1
    eta: str
    size: str
    restarts: int
    age: str
    age_seconds: float
    reason: str
    link: str


def page_link(page: str, namespace: str, name: str) -> str:
    """The relative URL of a job's page (query parameters select the job)."""
    return f"{page}?{urlencode({'ns': namespace, 'name': name})}"


def _explain(reason: str, conditions: list[Condition]) -> str:
    """`reason: message` from the newest condition that carries the reason."""
    with_reason = [c for c in conditions if c.reason == reason and c.message]
    with_reason.sort(key=lambda c: c.last_transition_time or "")
    return f"{reason}: {with_reason[-1].message}" if with_reason else reason


def training_row(job: TrainingJob, now: datetime) -> JobRow:
    st = job.status
    state = str(st.state) if st and st.state else State.PENDING
    progress = st.progress if st else None
    fraction = None
    if progress and progress.step is not None and progress.total_steps:
        fraction = min(progress.step / progress.total_steps, 1.0)
    if state == State.SUCCEEDED:
        fraction = 1.0
    reason = (st.reason or "") if st else ""
    shown = ""
    if state in UNHEALTHY_STATES or reason not in HEALTHY_REASONS:
        shown = _explain(reason, list(st.conditions or [])) if st and reason else ("waiting for the operator"
                                                                                    if not st else "")
        if st and st.last_failure and st.last_failure.exit_code and st.last_failure.pod:
            shown += f" (exit code {st.last_failure.exit_code} in pod {st.last_failure.pod})"
    eta = duration(progress.eta_seconds) if progress and state == State.RUNNING else ""
    nodes = job.spec.nodes + job.spec.parameter_servers
    created = (job.metadata.model_extra or {}).get("creationTimestamp")
    age = age_seconds(created, now)
    ns = job.metadata.namespace or ""
    return JobRow(TRAINING, ns, job.metadata.name, state, badge(state), fraction, eta,
                  f"{nodes} pod{'s' if nodes != 1 else ''}", (st.restart_count or 0) if st else 0,
                  duration(age), age or 0.0, shown.strip(), page_link(TRAINING_PAGE, ns, job.metadata.name))


def serving_state(job: ServingJob) -> tuple[str, str]:
    """(state, reason shown): Ready, Degraded, NotReady or Suspended."""
    st = job.status
    conditions = {c.type: c for c in (st.conditions if st else [])}
    ready, degraded = conditions.get("Ready"), conditions.get("Degraded")
    if job.spec.suspend:
        return State.SUSPENDED, ""
    if degraded is not None and degraded.status == "True":
        return "Degraded", _explain(degraded.reason or "", [degraded])
    if ready is not None and ready.status == "True":
        return "Ready", ""
    if ready is None:
        return "NotReady", "waiting for the operator"
    return "NotReady", _explain(ready.reason or "", [ready])


def serving_row(job: ServingJob, now: datetime) -> JobRow:
    st = job.status
    state, reason = serving_state(job)
    desired = job.spec.desired_replicas
    ready = st.ready_replicas if st else 0
    canary = f" + {st.canary.ready_replicas} canary" if st and st.canary else ""
    created = (job.metadata.model_extra or {}).get("creationTimestamp")
    age = age_seconds(created, now)
    ns = job.metadata.namespace or ""
    return JobRow(SERVING, ns, job.metadata.name, state, badge(state),
                  min(ready / desired, 1.0) if desired else None, "", f"{ready}/{desired} replicas{canary}", 0,
                  duration(age), age or 0.0, reason, page_link(SERVING_PAGE, ns, job.metadata.name))


def rows(training: list[TrainingJob], serving: list[ServingJob], now: datetime) -> list[JobRow]:
    return [*(training_row(j, now) for j in training), *(serving_row(j, now) for j in serving)]


def filtered(all_rows: list[JobRow], text: str = "", states: frozenset[str] = frozenset(),
             kinds: frozenset[str] = frozenset()) -> list[JobRow]:
    """Rows whose name or reason contains `text` (any case), in `states` and `kinds` (empty: all)."""
    needle = text.strip().lower()
    return [r for r in all_rows
            if (not needle or needle in r.name.lower() or needle in r.reason.lower())
            and (not states or r.state in states) and (not kinds or r.kind in kinds)]


def sort(all_rows: list[JobRow], key: str, descending: bool = False) -> list[JobRow]:
    """Sort by one of SORT_KEYS; `age` puts the newest first unless `descending` flips it."""
    keys = {
        "age": lambda r: r.age_seconds,
        "name": lambda r: (r.namespace, r.name),
        "state": lambda r: (r.state, r.name),
        "progress": lambda r: (r.progress if r.progress is not None else -1.0, r.name),
        "restarts": lambda r: (r.restarts, r.name),
    }
    if key not in keys:
        raise ValueError(f"unknown sort key {key!r}; one of {', '.join(SORT_KEYS)}")
    return sorted(all_rows, key=keys[key], reverse=descending)


def counts(all_rows: list[JobRow]) -> dict[str, int]:
    """How many jobs are in each state, most common first."""
    return dict(Counter(r.state for r in all_rows).most_common())
