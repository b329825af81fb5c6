"""Pure: (TrainingJob, observed pods, expectations, probe, now) -> the next status and the actions
that get there. A pass is a checklist: each step may settle the decision (returns True) or amend
the status and let the next step look. Same world in, same plan out; an unchanged world gives a
plan with no writes."""

from __future__ import annotations

from collections.abc import Callable

from kubeforge_api.constants import ConditionType, Reason, State

from ..plan import Event, Obj, Plan, World
from ..render.trainingjob import members, pod_name
from ..transitions import EventRule, condition_events
from .bounded import bound
from .compression import compressing
from .context import Config, Pass
from .creation import backoff_elapsed, create_missing, old_attempt_gone
from .deadlines import active_deadline
from .failures import failed_or_restarting
from .finished import finished
from .nodes import node_lost
from .pod_policy import pod_policy_violated
from .progress import record_progress
from .publish import publishing
from .queueing import place_admitted, queued, workload_active, workload_finished
from .refused import create_refused
from .running import running_or_why_not
from .success import succeeded
from .suspend import suspended
from .validate import invalid_spec

Step = Callable[[Pass], bool]
STEPS: tuple[Step, ...] = (
    invalid_spec,  # nothing else can be read from a spec the models reject
    workload_finished,  # a queued job that ended marks its Kueue Workload Finished (quota released)
    finished,  # a terminal job only tidies up and expires; no step below may change it
    workload_active,  # a suspended queued job's Kueue Workload is deactivated (its quota goes back)
    suspended,  # a suspended job holds no pods, whatever its pods say
    pod_policy_violated,  # pods the operator's settings forbid are never created
    create_refused,  # what the API server refused to create, it will refuse again: fail with its words
    queued,  # a job in a Kueue queue runs only while its Workload is admitted; an eviction stops it
    active_deadline,  # the deadline outranks failures and progress
    node_lost,  # a member on a lost node restarts the gang, whatever its peers report
    failed_or_restarting,  # the earliest failure decides before anything counts as success
    record_progress,  # recorded before success so a finished job keeps its last numbers
    compressing,  # training done: the compression stage runs before the job may succeed
    publishing,  # then the artifacts are copied to spec.output
    succeeded,  # all workers done; checked before anything is recreated
    old_attempt_gone,  # never two live pods for one rank: the old attempt goes first
    backoff_elapsed,  # wait out the restart back-off
    create_missing,  # create the Service and pods that are missing
    place_admitted,  # pods of a queued job go on the ResourceFlavors Kueue admitted them to
    running_or_why_not,  # Running, or why not (and the startup deadline)
)
EVENTS = EventRule(
    warning_reasons=frozenset({Reason.UNSCHEDULABLE, Reason.IMAGE_PULL_BACKOFF, Reason.CRASH_LOOP_BACKOFF,
                               Reason.CONFIG_ERROR, Reason.GANG_RESTART, Reason.CREATE_REJECTED, Reason.NAME_CONFLICT,
                               Reason.POD_POLICY_VIOLATION, Reason.NODE_LOST}),
    trouble=frozenset({ConditionType.FAILED, ConditionType.RESTARTING}),
)


def decide(world: World, cfg: Config) -> Plan:
    p = Pass(world, cfg)
    for step in STEPS:
        if step(p):
            break
    return _finish(p)


def _replica_statuses(p: Pass) -> dict[str, dict[str, int]]:
    """Per role: pods pending (created, not yet running), active (running), succeeded, failed.
    Pods created but not yet seen count as pending, so seeing them arrive writes nothing."""
    out: dict[str, dict[str, int]] = {}

    def count(role: str, key: str) -> None:  # counts of 0 are left out (readers take a missing count as 0)
        counts = out.setdefault(role, {})
        counts[key] = counts.get(key, 0) + 1

    for v in p.current:
        count(v.role, {"Succeeded": "succeeded", "Failed": "failed", "Running": "active"}.get(v.phase, "pending"))
    roles = {pod_name(p.ref.name, m.role, m.rank): m.role for m in members(p.spec)}
    created = p.expected | {c["metadata"]["name"] for c in p.plan.create if c["kind"] == "Pod"}
    for name in sorted(created - {v.name for v in p.current}):
        if name in roles:
            count(roles[name], "pending")
    return out


def _only_counts_changed(old: Obj, new: Obj) -> bool:
    """Whether the pod counts are all that changed (they are refreshed with the next status write)."""
    return bool(old) and {k: v for k, v in old.items() if k != "replicaStatuses"} == \
        {k: v for k, v in new.items() if k != "replicaStatuses"}


def _finish(p: Pass) -> Plan:
    if p.valid_spec is not None:
        p.status["replicaStatuses"] = _replica_statuses(p)
        if _only_counts_changed(p.old, p.status):  # one pod's own transition is no news for the job: no write
            p.status["replicaStatuses"] = p.old.get("replicaStatuses") or {}
        if not p.status["replicaStatuses"]:  # no pods: nothing to count
            del p.status["replicaStatuses"]
    p.status.setdefault("restartCount", 0)
    p.status.setdefault("state", State.PENDING)
    p.plan.events = [*p.plan.events, *condition_events(p.old, p.status, EVENTS)]
    if p.progress_warning:  # the job reconciles on; its progress just is not read from that endpoint
        p.plan.events.append(Event("Warning", Reason.PROGRESS_ENDPOINT_MISBEHAVING, p.progress_warning))
    bound(p.status)  # after the events: they keep the full messages
    return p.plan
