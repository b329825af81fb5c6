"""Steps for a TrainingJob queued by Kueue (labelled `kueue.x-k8s.io/queue-name`): the operator is
the Workload's integrator, doing for a TrainingJob what Kueue's job reconciler does for a batch Job.

- No Workload: create it (owned by the job); no pods run; `Queued` says why.
- Not admitted: no pods; `Queued=True` with Kueue's own reason and message (e.g. insufficient quota).
- Admitted: `Queued=False Admitted`; the other steps bring the gang up, and `place_admitted` puts the
  pods created on the admitted ResourceFlavors (their node labels and tolerations), no more per pod
  set than admitted (an elastic job may be admitted partially, down to its minCount).
- Evicted (preemption, quota reclaimed, queue stopped...): the gang restarts as a disruption (not
  counted against backoffLimit; lastFailure and an Event say why), its pods are deleted gracefully,
  and once none runs the Workload's admission is given back (status subresource) so the preemptor
  can start; the job then waits to be admitted again and resumes from its last checkpoint.
- The job ended: the Workload is marked `Finished` (Kueue releases the quota).
- Suspended (`spec.runPolicy.suspend`): the Workload is deactivated (`spec.active: false`, as Kueue maps
  a Job's suspend), so Kueue evicts it and its quota goes back once the pods are gone; resuming
  reactivates it and the job queues again.

Jobs without the label never reach past the first check. Whether Kueue is installed is detected once
at operator start (`Config.kueue`); a queued job where it is not waits with reason KueueNotInstalled."""

from __future__ import annotations

from kubeforge_api.conditions import find, is_true
from kubeforge_api.constants import (
    LABEL_KUEUE_PRIORITY,
    LABEL_KUEUE_QUEUE,
    LABEL_RANK,
    LABEL_ROLE,
    STAGE_ROLES,
    ConditionType,
    Reason,
    State,
)
from kubeforge_api.exitcodes import FailureClass

from ..observe import Failure
from ..plan import Event, Obj, StatusWrite, ts
from ..render.workload import (
    ADMITTED,
    EVICTED,
    FINISHED,
    QUOTA_RESERVED,
    applied_active,
    assigned_counts,
    assigned_flavors,
    finished_patch,
    place,
    placement,
    release_patch,
    render_active,
    render_workload,
)
from .context import Pass
from .failures import restart
from .finished import is_finished

FLAVOR_WAIT_S = 1.0  # an admitted flavor not in the cache yet: look again soon
PRIORITY_WAIT_S = 5.0  # a missing priority class: look again (a job without children is not queued by its arrival)


def queue_of(p: Pass) -> str:
    return str((p.job["metadata"].get("labels") or {}).get(LABEL_KUEUE_QUEUE) or "")


def workload(p: Pass) -> Obj | None:
    return next(iter(p.world.owned("Workload")), None)


def _conds(wl: Obj) -> list[Obj]:
    return list((wl.get("status") or {}).get("conditions") or [])


def admitted(wl: Obj) -> bool:
    return is_true(_conds(wl), ADMITTED) and not is_true(_conds(wl), EVICTED)


def wait(p: Pass, reason: str, message: str) -> bool:
    """No pods while the job waits in its queue; the status says for what."""
    p.delete(v for v in p.pods if v.role not in STAGE_ROLES)
    p.set(ConditionType.QUEUED, True, reason, message)
    p.set_if_present(ConditionType.RUNNING, False, reason, message)
    p.status["state"], p.status["reason"] = State.QUEUED, reason
    return True


def _priority(p: Pass) -> tuple[str, int] | str | None:
    """The WorkloadPriorityClass (name, value), None when the job names none, or the missing name."""
    name = str((p.job["metadata"].get("labels") or {}).get(LABEL_KUEUE_PRIORITY) or "")
    if not name:
        return None
    found = (p.world.related.get("WorkloadPriorityClass") or {}).get(name)
    return name if found is None else (name, int(found["value"]))


def _create(p: Pass, queue: str) -> bool:
    priority = _priority(p)
    if isinstance(priority, str):
        p.plan.requeue(PRIORITY_WAIT_S)
        return wait(p, Reason.PRIORITY_CLASS_NOT_FOUND, f"WorkloadPriorityClass {priority} (label "
                                                        f"{LABEL_KUEUE_PRIORITY}) does not exist")
    p.plan.create.append(render_workload(p.ref, p.spec, queue, priority, p.cfg.default_image, p.cfg.shm_size))
    return wait(p, "Pending", f"waiting for Kueue to admit the job in LocalQueue {queue}")


def _evicted(p: Pass, wl: Obj) -> bool:
    """Stop the gang (a disruption, once per eviction), then give the admission back when no pod runs."""
    cond = find(_conds(wl), EVICTED) or {}
    why = f"Kueue evicted the job ({cond.get('reason')}: {cond.get('message')})"
    if p.current:  # the attempt that was admitted: the next one starts after the next admission
        failure = Failure(p.current[0].name, "", 0, Reason.EVICTED, why, ts(p.now))
        restart(p, failure, FailureClass.DISRUPTION, why)
        p.status.pop("startTime", None)
        p.plan.events.append(Event("Warning", Reason.EVICTED, f"{why}: its pods are stopped; it waits to be admitted "
                                                              f"again and resumes from its last checkpoint (a "
                                                              f"disruption, not counted against backoffLimit)"))
    wait(p, Reason.EVICTED, f"{why}; waiting to be admitted again")
    _release(p, wl)
    return True


def _release(p: Pass, wl: Obj) -> None:
    """Give an evicted Workload's quota back once none of the job's pods runs."""
    if (wl.get("status") or {}).get("admission") and not any(not v.finished for v in p.pods):
        p.plan.child_status.append(StatusWrite("Workload", wl["metadata"]["name"],
                                               wl["metadata"]["resourceVersion"], release_patch(wl, ts(p.now))))


def workload_active(p: Pass) -> bool:
    """Step (before the suspended step settles): `spec.runPolicy.suspend` deactivates the Workload
    (Kueue evicts it as Deactivated; its quota goes back once the pods are gone); resuming reactivates it."""
    wl = workload(p) if queue_of(p) and p.cfg.kueue else None
    if wl is None:
        return False
    active = not p.policy.suspend
    if applied_active(wl) != active:
        p.plan.update.append(render_active(wl, active))
    if not active and is_true(_conds(wl), EVICTED):
        _release(p, wl)
    return False


def queued(p: Pass) -> bool:
    """Step: hold the job until Kueue admits its Workload; follow an eviction."""
    queue = queue_of(p)
    if not queue:
        return False
    if not p.cfg.kueue:
        return wait(p, Reason.KUEUE_NOT_INSTALLED, f"the job names LocalQueue {queue} but this cluster does not "
                                                   f"serve Kueue's Workload API (checked at operator start)")
    wl = workload(p)
    if wl is None:
        if any(kind == "Workload" for kind, _ in p.world.expected):
            return wait(p, "Pending", f"waiting for Kueue to admit the job in LocalQueue {queue}")
        return _create(p, queue)
    if is_true(_conds(wl), EVICTED) and not is_finished(p):
        return _evicted(p, wl)
    if not admitted(wl):
        reserved = find(_conds(wl), QUOTA_RESERVED) or {}
        return wait(p, str(reserved.get("reason") or "Pending"),
                    str(reserved.get("message") or f"waiting for Kueue to admit the job in LocalQueue {queue}"))
    cq = ((wl.get("status") or {}).get("admission") or {}).get("clusterQueue", "")
    p.set(ConditionType.QUEUED, False, Reason.ADMITTED, f"admitted by ClusterQueue {cq}")
    return False


def place_admitted(p: Pass) -> bool:
    """Step: the pods this pass creates go where the admission put their pod set, and no more of them
    than it admitted (an elastic job admitted partially starts with fewer workers)."""
    wl = workload(p) if queue_of(p) and p.cfg.kueue else None
    if wl is None or not p.plan.create:
        return False
    admission = (wl.get("status") or {}).get("admission") or {}
    flavors, counts = assigned_flavors(admission), assigned_counts(admission)
    known = p.world.related.get("ResourceFlavor") or {}
    placed: list[Obj] = []
    for child in p.plan.create:
        labels = child["metadata"].get("labels") or {}
        role = labels.get(LABEL_ROLE, "")
        if child["kind"] != "Pod":
            placed.append(child)
            continue
        if int(labels.get(LABEL_RANK, 0)) >= counts.get(role, 1 << 30):  # admitted partially: no more than that
            continue
        where = placement(flavors.get(role, []), known)
        if where is None:  # a flavor admitted before this operator saw it: create these pods a moment later
            p.plan.requeue(FLAVOR_WAIT_S)
            continue
        placed.append(place(child, *where))
    p.plan.create = placed
    return False


def workload_finished(p: Pass) -> bool:
    """Step (before the finished step settles): an ended job's Workload is marked Finished."""
    wl = workload(p) if queue_of(p) else None
    if wl is None or not is_finished(p) or is_true(_conds(wl), FINISHED):
        return False
    ok = is_true(p.conds, ConditionType.SUCCEEDED)
    message = f"the TrainingJob {'succeeded' if ok else 'failed'}" + (
        "" if ok else f": {p.status.get('reason', '')}")
    p.plan.child_status.append(StatusWrite("Workload", wl["metadata"]["name"], wl["metadata"]["resourceVersion"],
                                           finished_patch(wl, ok, message, ts(p.now))))
    return False
