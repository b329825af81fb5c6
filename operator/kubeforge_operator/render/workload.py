"""Pure rendering of the Kueue side of a queued TrainingJob: the Workload that asks Kueue for quota
(one pod set per role, with the pods' resource requests), the placement an admission grants (the
assigned ResourceFlavors' node labels and tolerations), the pods moved there, spec.active (a
suspended job's Workload is deactivated), and the status patches an integrator writes to the
Workload (admission given back after an eviction, Finished). These mirror what Kueue's own job
reconciler (jobframework) writes for the kinds it knows."""

from __future__ import annotations

from typing import Any

from kubeforge_api.conditions import find, set_condition
from kubeforge_api.constants import LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, ROLE_NODE
from kubeforge_api.trainingjob import TrainingJobSpec

from ..plan import ObjectRef
from .common import owner_reference
from .trainingjob import members, render_pod

Obj = dict[str, Any]
KUEUE_GROUP = "kueue.x-k8s.io"
WORKLOAD_API_VERSION = f"{KUEUE_GROUP}/v1beta2"
# Workload condition types and the reasons Kueue gives them (apis/kueue/v1beta2/workload_types.go).
QUOTA_RESERVED, ADMITTED, EVICTED, REQUEUED, FINISHED = "QuotaReserved", "Admitted", "Evicted", "Requeued", "Finished"
REQUEUED_REASONS = frozenset({"Preempted", "NodeFailures"})  # Requeued=True only for these (reconciler.go step 6)
TEMPLATE_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "restartPolicy")


def workload_name(job: ObjectRef) -> str:
    """Deterministic per job object: a job deleted and created again under its name gets a new one."""
    return f"trainingjob-{job.name}-{job.uid[:5]}"


def _template(pod: Obj) -> Obj:
    """What Kueue reads of a pod: its containers' requests and where it may run (template metadata may
    hold only labels and annotations)."""
    spec = pod["spec"]
    containers = [{"name": c["name"], "image": c["image"], "resources": c.get("resources") or {}}
                  for c in spec["containers"]]
    out: Obj = {"containers": containers} | {k: spec[k] for k in TEMPLATE_FIELDS if spec.get(k)}
    if spec.get("initContainers"):
        out["initContainers"] = [{"name": c["name"], "image": c["image"], "resources": c.get("resources") or {}}
                                 for c in spec["initContainers"]]
    return {"metadata": {"labels": dict(pod["metadata"]["labels"])}, "spec": out}


def pod_sets(job: ObjectRef, spec: TrainingJobSpec, default_image: str, shm_size: str) -> list[Obj]:
    """One pod set per role, in member order: count, the template of its first pod, and for an elastic
    job's workers `minCount` (partial admission down to `spec.elastic.minNodes`)."""
    out: list[Obj] = []
    for m in members(spec):
        if out and out[-1]["name"] == m.role:
            out[-1]["count"] += 1
            continue
        out.append({"name": m.role, "count": 1, "template": _template(render_pod(job, spec, m, 0, default_image,
                                                                                   shm_size))})
    for ps in out:
        if ps["name"] == ROLE_NODE and spec.elastic is not None and spec.elastic.min_nodes < ps["count"]:
            ps["minCount"] = spec.elastic.min_nodes
    return out


def render_workload(job: ObjectRef, spec: TrainingJobSpec, queue: str, priority: tuple[str, int] | None,
                    default_image: str, shm_size: str) -> Obj:
    """The Workload a queued job owns (controller reference: it goes with the job). `priority` is the
    WorkloadPriorityClass's name and value (Kueue's webhook would copy the value; nothing else does)."""
    wl_spec: Obj = {"queueName": queue, "podSets": pod_sets(job, spec, default_image, shm_size)}
    if priority is not None:
        wl_spec["priorityClassRef"] = {"group": KUEUE_GROUP, "kind": "WorkloadPriorityClass", "name": priority[0]}
        wl_spec["priority"] = priority[1]
    return {
        "apiVersion": WORKLOAD_API_VERSION, "kind": "Workload",
        "metadata": {"name": workload_name(job), "namespace": job.namespace,
                     "labels": {LABEL_JOB: job.name, LABEL_MANAGED_BY: MANAGED_BY},
                     "ownerReferences": [owner_reference(job, "TrainingJob")]},
        "spec": wl_spec,
    }


ANNOTATION_ACTIVE = "kubeforge.dev/active"  # what the operator last applied to spec.active ("false": suspended)


def render_active(wl: Obj, active: bool) -> Obj:
    """The server-side apply that sets the Workload's spec.active (a suspended job's Workload is
    deactivated: Kueue evicts it and its quota goes back); the annotation records what was applied,
    as a pass sees a child's metadata, not its spec."""
    meta = wl["metadata"]
    return {"apiVersion": WORKLOAD_API_VERSION, "kind": "Workload",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "annotations": {ANNOTATION_ACTIVE: str(active).lower()}},
            "spec": {"active": active}}


def applied_active(wl: Obj) -> bool:
    """spec.active as the operator last applied it (true until it applied anything)."""
    return bool((wl["metadata"].get("annotations") or {}).get(ANNOTATION_ACTIVE, "true") != "false")


def project_flavor(flavor: Obj) -> Obj:
    """What a pass needs of a ResourceFlavor: the node labels and tolerations its pods get."""
    spec = flavor.get("spec") or {}
    return {"nodeLabels": dict(spec.get("nodeLabels") or {}), "tolerations": list(spec.get("tolerations") or [])}


def project_priority_class(wpc: Obj) -> Obj:
    """What a pass needs of a WorkloadPriorityClass: its value."""
    return {"value": int(wpc.get("value") or 0)}


def assigned_flavors(admission: Obj) -> dict[str, list[str]]:
    """Per pod set, the ResourceFlavors the admission assigned (each once, in resource order)."""
    out: dict[str, list[str]] = {}
    for a in admission.get("podSetAssignments") or []:
        names = [str(f) for _, f in sorted((a.get("flavors") or {}).items())]
        out[str(a.get("name"))] = list(dict.fromkeys(names))
    return out


def assigned_counts(admission: Obj) -> dict[str, int]:
    """Per pod set, how many pods the admission admitted: fewer than asked for when Kueue admitted an
    elastic job partially (down to its minCount)."""
    return {str(a.get("name")): a["count"] for a in admission.get("podSetAssignments") or []
            if isinstance(a.get("count"), int) and not isinstance(a.get("count"), bool)}


def placement(flavor_names: list[str], flavors: dict[str, Obj]) -> tuple[dict[str, str], list[Obj]] | None:
    """The node selector and tolerations of the named flavors merged; None while one is not known yet."""
    selector: dict[str, str] = {}
    tolerations: list[Obj] = []
    for name in flavor_names:
        flavor = flavors.get(name)
        if flavor is None:
            return None
        selector.update(flavor["nodeLabels"])
        tolerations.extend(t for t in flavor["tolerations"] if t not in tolerations)
    return selector, tolerations


def place(pod: Obj, selector: dict[str, str], tolerations: list[Obj]) -> Obj:
    """The pod with the admitted flavors' node labels and tolerations added to its own."""
    spec = dict(pod["spec"])
    if selector:
        spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **selector}
    extra = [t for t in tolerations if t not in (spec.get("tolerations") or [])]
    if extra:
        spec["tolerations"] = [*(spec.get("tolerations") or []), *extra]
    return {**pod, "spec": spec}


def _conditions(wl: Obj) -> list[Obj]:
    return list((wl.get("status") or {}).get("conditions") or [])


def release_patch(wl: Obj, now: str) -> Obj:
    """The status patch that gives an evicted Workload's quota back once its pods are gone, as Kueue's
    reconciler does: Requeued (True after a preemption or node failures), QuotaReserved=False Pending,
    no admission, Admitted=False NoReservation."""
    gen = int(wl["metadata"].get("generation", 1))
    evicted = find(_conditions(wl), EVICTED) or {}
    reason, message = str(evicted.get("reason") or "Evicted"), str(evicted.get("message") or "evicted")
    conds = set_condition(_conditions(wl), REQUEUED, reason in REQUEUED_REASONS, reason, message, now, gen)
    conds = set_condition(conds, QUOTA_RESERVED, False, "Pending", message, now, gen)
    conds = set_condition(conds, ADMITTED, False, "NoReservation", "The workload has no reservation", now, gen)
    return {"conditions": conds, "admission": None}


def finished_patch(wl: Obj, succeeded: bool, message: str, now: str) -> Obj:
    """The status patch that marks the Workload Finished (Kueue then releases its quota)."""
    gen = int(wl["metadata"].get("generation", 1))
    reason = "Succeeded" if succeeded else "Failed"
    return {"conditions": set_condition(_conditions(wl), FINISHED, True, reason, message, now, gen)}
