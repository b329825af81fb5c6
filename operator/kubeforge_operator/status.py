"""Pure: (TrainingJob, observed pods, now) -> the next status and the actions that get there.
Every reconcile pass recomputes this from scratch (level-based); the same world in gives the
same plan out, and an unchanged world gives a plan with no writes."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeforge_api.conditions import is_true, set_condition
from kubeforge_api.constants import ROLE_NODE, ConditionType, Reason, State
from kubeforge_api.exitcodes import FailureClass, classify
from kubeforge_api.trainingjob import CleanPodPolicy, TrainingJobSpec
from pydantic import ValidationError

from .observe import WAITING, Failure, PodView
from .progress import merge_history, summary
from .render.trainingjob import JobRef, members, pod_name, render_pod, render_service

Obj = dict[str, Any]
WARNING_REASONS = {Reason.UNSCHEDULABLE, Reason.IMAGE_PULL_BACKOFF, Reason.CRASH_LOOP_BACKOFF, Reason.CONFIG_ERROR,
                   Reason.GANG_RESTART}
# Preference when several pods say why they are not running: the most actionable first.
BLOCKED_ORDER = [Reason.UNSCHEDULABLE, Reason.IMAGE_PULL_BACKOFF, Reason.CONFIG_ERROR, Reason.CRASH_LOOP_BACKOFF,
                 Reason.CONTAINER_CREATING]


@dataclass(frozen=True)
class Config:
    default_image: str
    shm_size: str = "1Gi"
    backoff_seconds: float = 10.0
    backoff_max_seconds: float = 300.0
    progress_interval_seconds: float = 5.0


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: Obj
    create: list[Obj] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (pod name, uid)
    delete_job: bool = False
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None

    def requeue(self, seconds: float) -> None:
        seconds = max(seconds, 0.05)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def backoff(counted_failures: int, cfg: Config) -> float:
    """Delay before the next attempt: base, doubling per counted failure, capped."""
    return float(min(cfg.backoff_seconds * 2 ** max(counted_failures - 1, 0), cfg.backoff_max_seconds))


class _Pass:
    """Accumulates one decision; `decide` drives it."""

    def __init__(self, job: Obj, now: datetime) -> None:
        self.job = job
        self.now = now
        self.gen = int(job["metadata"].get("generation", 1))
        self.old = job.get("status") or {}
        self.status: Obj = copy.deepcopy(self.old)
        self.plan = Plan(self.status)

    @property
    def conds(self) -> list[Obj]:
        return list(self.status.get("conditions") or [])

    def set(self, ctype: ConditionType, value: bool, reason: str, message: str) -> None:
        self.status["conditions"] = set_condition(self.conds, ctype, value, reason, message, ts(self.now), self.gen)

    def set_if_present(self, ctype: ConditionType, value: bool, reason: str, message: str) -> None:
        if any(c["type"] == ctype for c in self.conds):
            self.set(ctype, value, reason, message)

    def terminal(self, ctype: ConditionType, reason: str, message: str) -> None:
        self.set(ctype, True, reason, message)
        self.set(ConditionType.RUNNING, False, reason, message)
        self.set_if_present(ConditionType.RESTARTING, False, reason, message)
        self.status["state"] = State.SUCCEEDED if ctype == ConditionType.SUCCEEDED else State.FAILED
        self.status.setdefault("completionTime", ts(self.now))


def _cleanup(pods: list[PodView], policy: CleanPodPolicy) -> list[tuple[str, str]]:
    keep_finished = policy == CleanPodPolicy.RUNNING
    if policy == CleanPodPolicy.NONE:
        return []
    return [(p.name, p.uid) for p in pods if not p.deleting and not (keep_finished and p.finished)]


def _replica_statuses(current: list[PodView]) -> Obj:
    out: Obj = {}
    for p in current:
        counts = out.setdefault(p.role, {"active": 0, "succeeded": 0, "failed": 0})
        key = "succeeded" if p.phase == "Succeeded" else "failed" if p.phase == "Failed" else "active"
        counts[key] += 1
    return out


def _failure_message(f: Failure, cls: FailureClass) -> str:
    if cls == FailureClass.DISRUPTION:
        return f"pod {f.pod} was disrupted ({f.reason}){': ' + f.message if f.message else ''}"
    what = f"pod {f.pod} container {f.container} exited with code {f.exit_code} ({f.reason})"
    if f.reason == "OOMKilled":
        what += "; it ran out of memory: raise spec.resources.limits.memory or lower the batch size"
    return f"{what}{': ' + f.message.splitlines()[-1] if f.message else ''}"


def _root_failure(current: list[PodView], missing_while_running: list[str], now: datetime) -> tuple[
        Failure, FailureClass] | None:
    """The earliest failure of the attempt: later ones are usually peers reacting to it."""
    found: list[tuple[str, Failure, FailureClass]] = []
    for p in current:
        if p.failure is not None:
            f = p.failure
            cls = classify(f.exit_code, f.reason, p.disrupted)
            found.append((f.time or ts(now), f, cls))
        elif p.disrupted or (p.deleting and not p.finished):
            f = Failure(p.name, "", 0, Reason.DISRUPTED if p.disrupted else Reason.POD_DELETED,
                        "the pod was evicted, preempted or deleted", ts(now))
            found.append((ts(now), f, FailureClass.DISRUPTION))
    for name in missing_while_running:
        f = Failure(name, "", 0, Reason.POD_DELETED, "the pod disappeared", ts(now))
        found.append((ts(now), f, FailureClass.DISRUPTION))
    if not found:
        return None
    _, f, cls = min(found, key=lambda x: (x[0], x[2] == FailureClass.DISRUPTION))
    return f, cls


def decide(job: Obj, pods: list[PodView], service_exists: bool, expected: frozenset[str], now: datetime,
           cfg: Config, progress: Obj | None = None) -> Plan:
    """The next status and actions. `expected` names pods created but not yet seen in `pods`;
    `progress` is what rank 0's progress endpoint said this pass (None when not asked or silent)."""
    pods = sorted(pods, key=lambda v: (v.role, v.rank, v.attempt, v.name))  # the same world in any order
    p = _Pass(job, now)
    st = p.status
    st["observedGeneration"] = p.gen
    conds = p.conds
    ref = JobRef.of(job)
    try:
        spec = TrainingJobSpec.model_validate(job.get("spec") or {})
    except ValidationError as e:
        if not (is_true(conds, ConditionType.FAILED) or is_true(conds, ConditionType.SUCCEEDED)):
            errors = "; ".join(f"spec.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            p.terminal(ConditionType.FAILED, Reason.INVALID_SPEC, errors)
            st["reason"] = Reason.INVALID_SPEC
        p.plan.delete = [(v.name, v.uid) for v in pods if not v.deleting]
        return _finish(p, [])

    restarts = int(st.get("restartCount", 0))
    disruptions = int(st.get("disruptions", 0))
    current = [v for v in pods if v.attempt == restarts]
    stale = [v for v in pods if v.attempt != restarts]
    policy = spec.run_policy

    if is_true(conds, ConditionType.SUCCEEDED) or is_true(conds, ConditionType.FAILED):
        p.plan.delete = _cleanup(pods, policy.clean_pod_policy)
        if policy.ttl_seconds_after_finished is not None and st.get("completionTime"):
            expiry = parse_ts(st["completionTime"]) + timedelta(seconds=policy.ttl_seconds_after_finished)
            if now >= expiry:
                p.plan.delete_job = True
            else:
                p.plan.requeue((expiry - now).total_seconds())
        return _finish(p, current)

    if policy.suspend:
        p.plan.delete = [(v.name, v.uid) for v in pods if not v.deleting]
        p.set(ConditionType.SUSPENDED, True, Reason.SUSPENDED, "the job is suspended; its pods are deleted")
        p.set_if_present(ConditionType.RUNNING, False, Reason.SUSPENDED, "the job is suspended")
        st["state"] = State.SUSPENDED
        st.pop("startTime", None)  # as for a Job: the active deadline counts from the resume
        return _finish(p, current)
    if is_true(conds, ConditionType.SUSPENDED):
        p.set(ConditionType.SUSPENDED, False, Reason.RESUMED, "the job was resumed")

    def fail(reason: str, message: str, failure: Failure | None = None, kill_all: bool = False) -> Plan:
        p.terminal(ConditionType.FAILED, reason, message)
        st["reason"] = reason
        if failure is not None:
            st["lastFailure"] = failure.dump()
        rule = CleanPodPolicy.RUNNING if kill_all and policy.clean_pod_policy == CleanPodPolicy.NONE \
            else policy.clean_pod_policy
        p.plan.delete = _cleanup(pods, rule)
        return _finish(p, current)

    if policy.active_deadline_seconds and st.get("startTime"):
        expiry = parse_ts(st["startTime"]) + timedelta(seconds=policy.active_deadline_seconds)
        if now >= expiry:
            return fail(Reason.DEADLINE_EXCEEDED,
                        f"the job ran longer than activeDeadlineSeconds={policy.active_deadline_seconds}",
                        kill_all=True)
        p.plan.requeue((expiry - now).total_seconds())

    gang = members(spec)
    names = {pod_name(ref.name, m.role, m.rank) for m in gang}
    present = {v.name for v in current}
    started = any(v.phase != "Pending" for v in current)
    missing_while_running = sorted(names - present - expected) if started else []
    root = _root_failure(current, missing_while_running, now)
    if root is not None:
        failure, cls = root
        message = _failure_message(failure, cls)
        counted = restarts - disruptions
        if cls == FailureClass.PERMANENT:
            return fail(Reason.OOM_KILLED if failure.reason == "OOMKilled" else Reason.EXIT_CODE, message, failure)
        if cls == FailureClass.RETRYABLE and counted >= policy.backoff_limit:
            return fail(Reason.BACKOFF_LIMIT_EXCEEDED,
                        f"{counted + 1} counted failures exceed backoffLimit={policy.backoff_limit}; last: {message}",
                        failure)
        st["restartCount"] = restarts + 1
        if cls == FailureClass.DISRUPTION:
            st["disruptions"] = disruptions + 1
        st["lastFailure"] = failure.dump()
        p.set(ConditionType.RESTARTING, True, Reason.GANG_RESTART,
              f"restarting all pods (attempt {restarts + 1}) because {message}")
        p.set(ConditionType.RUNNING, False, Reason.GANG_RESTART, message)
        st["state"] = State.RESTARTING
        p.plan.delete = [(v.name, v.uid) for v in pods if not v.deleting]
        return _finish(p, [])

    if progress is not None:
        _record_progress(st, progress)
    node_pods = [v for v in current if v.role == ROLE_NODE]
    if len(node_pods) == spec.nodes and all(v.phase == "Succeeded" for v in node_pods):
        rank0 = next((v for v in node_pods if v.rank == 0), None)
        if rank0 is not None and rank0.result:
            _record_result(st, rank0.result, spec, ref)
        p.terminal(ConditionType.SUCCEEDED, Reason.COMPLETED, f"all {spec.nodes} worker pods succeeded")
        st["reason"] = Reason.COMPLETED
        p.plan.delete = _cleanup(pods, policy.clean_pod_policy)
        return _finish(p, current)

    if stale:  # the old attempt must be fully gone before the new one starts
        p.plan.delete = [(v.name, v.uid) for v in stale if not v.deleting]
        st["state"] = State.RESTARTING
        return _finish(p, current)

    if restarts and st.get("lastFailure", {}).get("time"):
        counted = restarts - disruptions
        resume_at = parse_ts(st["lastFailure"]["time"]) + timedelta(seconds=backoff(max(counted, 1), cfg))
        if now < resume_at:
            st["state"] = State.RESTARTING
            p.plan.requeue((resume_at - now).total_seconds())
            return _finish(p, current)

    if not service_exists:
        p.plan.create.append(render_service(ref))
    new = [render_pod(ref, spec, m, restarts, cfg.default_image, cfg.shm_size) for m in gang
           if pod_name(ref.name, m.role, m.rank) not in present | expected]
    p.plan.create.extend(new)
    if new or expected:
        st.setdefault("startTime", ts(now))
        p.set(ConditionType.CREATED, True, Reason.PODS_CREATED, f"created the pods of attempt {restarts}")

    if len(current) == len(gang) and all(v.running or v.phase == "Succeeded" for v in current):
        p.set(ConditionType.RUNNING, True, Reason.ALL_RUNNING, f"all {len(gang)} pods are running")
        p.set_if_present(ConditionType.RESTARTING, False, Reason.RESTARTED, f"attempt {restarts} is running")
        st["state"] = State.RUNNING
        st["reason"] = Reason.ALL_RUNNING
        if spec.recipe is not None:
            p.plan.requeue(cfg.progress_interval_seconds)  # poll rank 0's progress
        return _finish(p, current)

    blocked = sorted((v.blocked for v in current if v.blocked), key=lambda b: BLOCKED_ORDER.index(Reason(b[0])))
    reason, message = blocked[0] if blocked else (str(Reason.CONTAINER_CREATING), WAITING)
    p.set(ConditionType.RUNNING, False, reason, message)
    st["state"] = State.RESTARTING if is_true(p.conds, ConditionType.RESTARTING) else State.CREATED
    st["reason"] = reason
    if policy.startup_deadline_seconds:
        since = min((parse_ts(v.created) for v in current if v.created), default=now)
        expiry = since + timedelta(seconds=policy.startup_deadline_seconds)
        if now >= expiry:
            return fail(Reason.STARTUP_DEADLINE_EXCEEDED,
                        f"pods were not running within startupDeadlineSeconds={policy.startup_deadline_seconds}: "
                        f"{message}", kill_all=True)
        p.plan.requeue((expiry - now).total_seconds())
    return _finish(p, current)


def _record_progress(st: Obj, progress: Obj) -> None:
    st["progress"] = summary(progress)
    st["history"] = merge_history(st.get("history") or {}, progress.get("history") or [])
    if progress.get("last_checkpoint_step") is not None:
        st["lastCheckpoint"] = {"step": int(progress["last_checkpoint_step"])}


def _record_result(st: Obj, result: Obj, spec: TrainingJobSpec, ref: JobRef) -> None:
    """Rank 0's termination message: the artifact it wrote and its final progress."""
    if isinstance(result.get("progress"), dict):
        _record_progress(st, result["progress"])
    art = result.get("artifact")
    if isinstance(art, dict) and art.get("digest"):
        if spec.storage and spec.storage.persistent_volume_claim:
            base = f"pvc://{spec.storage.persistent_volume_claim.claim_name}/{spec.storage.path or ref.name}"
        else:
            base = f"emptydir://{ref.namespace}/{ref.name}"  # gone with the pod: use storage to keep artifacts
        st["artifact"] = {"uri": f"{base}/{art.get('path', 'artifact')}", "digest": art["digest"],
                          "sizeBytes": int(art.get("sizeBytes", 0))}


def _finish(p: _Pass, current: list[PodView]) -> Plan:
    st = p.status
    st["replicaStatuses"] = _replica_statuses(current)
    st.setdefault("restartCount", 0)
    if "state" not in st:
        st["state"] = State.PENDING
    old = {c["type"]: c for c in p.old.get("conditions") or []}
    for c in st.get("conditions") or []:
        prev = old.get(c["type"])
        if prev and (prev["status"], prev.get("reason")) == (c["status"], c.get("reason")):
            continue
        if c["status"] != "True" and c.get("reason") not in WARNING_REASONS:
            continue
        warn = (c["type"] in (ConditionType.FAILED, ConditionType.RESTARTING) and c["status"] == "True") or \
            c.get("reason") in WARNING_REASONS
        p.plan.events.append(Event("Warning" if warn else "Normal", c.get("reason", ""), c.get("message", "")))
    return p.plan
