"""Step: the earliest failure of the current attempt decides (later ones are usually peers reacting
to it): a permanent one fails the job, a retryable one restarts the whole gang until
`backoffLimit` counted failures, a disruption (eviction, preemption, deletion) restarts it
without counting. The exit-code table (kubeforge_api.exitcodes) draws the lines. The workers an
elastic job rides out (elastic.py) are no failure."""

from __future__ import annotations

from kubeforge_api.constants import ConditionType, Reason, State
from kubeforge_api.exitcodes import FailureClass, classify
from kubeforge_api.trainingjob import TrainingJobSpec

from ..observe import Failure
from ..plan import ts
from ..render.trainingjob import members, pod_name
from .context import Pass
from .elastic import riding_out

OOM_ADVICE = "it ran out of memory: raise spec.resources.limits.memory or lower the batch size"


def describe(f: Failure, cls: FailureClass) -> str:
    """One line a user can act on: which pod, which container, what code and why."""
    if cls == FailureClass.DISRUPTION:
        return f"pod {f.pod} was disrupted ({f.reason}){': ' + f.message if f.message else ''}"
    what = f"pod {f.pod} container {f.container} exited with code {f.exit_code} ({f.reason})"
    if f.reason == "OOMKilled":
        what += f"; {OOM_ADVICE}"
    why = f.cause or (f.message.splitlines()[-1] if f.message else "")
    return f"{what}{': ' + why if why else ''}"


def _gang_names(p: Pass, spec: TrainingJobSpec) -> set[str]:
    return {pod_name(p.ref.name, m.role, m.rank) for m in members(spec)}


def root_failure(p: Pass) -> tuple[Failure, FailureClass] | None:
    """The earliest failure among the current attempt's pods, including pods that vanished."""
    now = ts(p.now)
    found: list[tuple[str, Failure, FailureClass]] = []
    riding = riding_out(p)
    for v in (v for v in p.current if v.name not in riding):
        if v.failure is not None:
            found.append((v.failure.time or now, v.failure, classify(v.failure.exit_code, v.failure.reason,
                                                                     v.disrupted)))
        elif v.disrupted or (v.deleting and not v.finished):
            reason = Reason.DISRUPTED if v.disrupted else Reason.POD_DELETED
            found.append((now, Failure(v.name, "", 0, reason, "the pod was evicted, preempted or deleted", now),
                          FailureClass.DISRUPTION))
    if any(v.phase != "Pending" for v in p.current):  # once started, a missing pod is a lost pod
        for name in sorted(_gang_names(p, p.spec) - {v.name for v in p.current} - p.expected - riding):
            found.append((now, Failure(name, "", 0, Reason.POD_DELETED, "the pod disappeared", now),
                          FailureClass.DISRUPTION))
    if not found:
        return None
    _, failure, cls = min(found, key=lambda x: (x[0], x[2] == FailureClass.DISRUPTION))
    return failure, cls


def failed_or_restarting(p: Pass) -> bool:
    root = root_failure(p)
    if root is None:
        return False
    failure, cls = root
    message = describe(failure, cls)
    counted = p.restarts - p.disruptions
    if cls == FailureClass.PERMANENT:
        return p.fail(Reason.OOM_KILLED if failure.reason == "OOMKilled" else Reason.EXIT_CODE, message, failure)
    if cls == FailureClass.RETRYABLE and counted >= p.policy.backoff_limit:
        return p.fail(Reason.BACKOFF_LIMIT_EXCEEDED,
                      f"{counted + 1} counted failures exceed backoffLimit={p.policy.backoff_limit}; last: {message}",
                      failure)
    return restart(p, failure, cls, message)


def restart(p: Pass, failure: Failure, cls: FailureClass, message: str) -> bool:
    """Restart the whole gang: the next attempt number and why, recorded before any pod is deleted."""
    p.status["restartCount"] = p.restarts + 1
    if cls == FailureClass.DISRUPTION:
        p.status["disruptions"] = p.disruptions + 1
    p.status["lastFailure"] = failure.dump()
    p.set(ConditionType.RESTARTING, True, Reason.GANG_RESTART,
          f"restarting all pods (attempt {p.restarts}) because {message}")
    p.set(ConditionType.RUNNING, False, Reason.GANG_RESTART, message)
    p.status["state"] = State.RESTARTING
    p.status["reason"] = Reason.GANG_RESTART
    p.delete(p.pods)
    return True
