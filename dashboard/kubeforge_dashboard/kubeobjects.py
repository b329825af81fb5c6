"""Pure conversions from Kubernetes objects (their JSON form, camelCase dicts) to the dashboard's
records, and from API answers to typed models. Kept apart from the client so they are unit-tested
without a cluster; quantities are parsed here because the dashboard only needs sums of requests."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .source import (
    ClusterQueueInfo,
    ContainerState,
    EventInfo,
    Listing,
    LocalQueueInfo,
    NodeInfo,
    PodInfo,
    QuotaUse,
    Resources,
    Taint,
    Usage,
)

Obj = dict[str, Any]
M = TypeVar("M", bound=BaseModel)
GPU = "nvidia.com/gpu"
_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": 1e-3, "u": 1e-6,
           "n": 1e-9}  # metrics-server reports CPU in nanocores
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(?:[eE]([+-]?[0-9]+))?([a-zA-Z]*)$")


def quantity(value: object) -> float:
    """A Kubernetes quantity (`500m`, `2Gi`, `1e3`, 4) as a number; 0 when unreadable."""
    m = _QUANTITY.match(str(value).strip())
    if not m or m.group(3) not in _SUFFIX:
        return 0.0
    number = float(m.group(1)) * (10 ** int(m.group(2)) if m.group(2) else 1)
    return number * _SUFFIX[m.group(3)]


def resources(values: dict[str, Any] | None) -> Resources:
    v = values or {}
    return Resources(cpu_m=round(quantity(v.get("cpu", 0)) * 1000), memory=round(quantity(v.get("memory", 0))),
                     gpus=round(quantity(v.get(GPU, 0))))


def _container_state(cs: Obj) -> ContainerState:
    state, last = cs.get("state") or {}, (cs.get("lastState") or {}).get("terminated") or {}
    kind = next(iter(state), "")
    detail = state.get(kind) or {}
    return ContainerState(
        name=str(cs.get("name", "")), ready=bool(cs.get("ready")), restarts=int(cs.get("restartCount", 0)),
        state=kind, reason=str(detail.get("reason", "")),
        exit_code=detail.get("exitCode") if kind == "terminated" else None,
        last_exit_code=last.get("exitCode"), last_reason=str(last.get("reason", "")))


def _pod_requests(spec: Obj) -> Resources:
    total = Resources()
    for c in spec.get("containers", []):
        r = c.get("resources") or {}
        total += resources({**(r.get("limits") or {}), **(r.get("requests") or {})})  # requests default to limits
    return total


def pod_info(pod: Obj) -> PodInfo:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    scheduled = conditions.get("PodScheduled", {})
    message = status.get("message") or (scheduled.get("message", "") if scheduled.get("status") == "False" else "")
    ports = [p.get("containerPort") for c in spec.get("containers", []) for p in c.get("ports", [])]
    return PodInfo(
        namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")), uid=str(meta.get("uid", "")),
        phase=str(status.get("phase", "Unknown")), node=str(spec.get("nodeName", "")),
        ip=str(status.get("podIP", "")), ready=conditions.get("Ready", {}).get("status") == "True",
        created=str(meta.get("creationTimestamp", "")), labels=dict(meta.get("labels") or {}),
        containers=tuple(_container_state(cs) for cs in status.get("containerStatuses", [])),
        message=str(message), requests=_pod_requests(spec), port=ports[0] if ports else None)


def event_info(ev: Obj) -> EventInfo:
    obj = ev.get("involvedObject") or ev.get("regarding") or {}
    time = (ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp")
            or ev.get("metadata", {}).get("creationTimestamp") or "")
    return EventInfo(time=str(time), type=str(ev.get("type", "")), reason=str(ev.get("reason", "")),
                     message=str(ev.get("message") or ev.get("note") or ""), object_kind=str(obj.get("kind", "")),
                     object_name=str(obj.get("name", "")), count=int(ev.get("count") or 1))


def _taint(t: Obj) -> Taint:
    return Taint(key=str(t.get("key", "")), effect=str(t.get("effect", "")), value=str(t.get("value") or ""),
                 added=str(t.get("timeAdded") or ""))


def node_info(node: Obj) -> NodeInfo:
    status, spec = node.get("status") or {}, node.get("spec") or {}
    cond: Obj = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return NodeInfo(name=str(node.get("metadata", {}).get("name", "")), ready=cond.get("status") == "True",
                    capacity=resources(status.get("capacity")), allocatable=resources(status.get("allocatable")),
                    labels=dict(node.get("metadata", {}).get("labels") or {}),
                    ready_status=str(cond.get("status", "")), ready_since=str(cond.get("lastTransitionTime") or ""),
                    ready_reason=str(cond.get("reason") or ""),
                    taints=tuple(_taint(t) for t in spec.get("taints") or []),
                    unschedulable=bool(spec.get("unschedulable")))


def _flavor_totals(flavors: list[Obj] | None, field: str) -> dict[tuple[str, str], float]:
    """`field` (e.g. total, borrowed) of each (flavor, resource) of a flavorsUsage/flavorsReservation list."""
    return {(str(f.get("name", "")), str(r.get("name", ""))): quantity(r.get(field, 0))
            for f in flavors or [] for r in f.get("resources") or []}


def _quotas(spec: Obj, status: Obj) -> tuple[QuotaUse, ...]:
    """Every (flavor, resource) of the spec's resource groups, in their order, then any only in use."""
    nominal = {(str(f.get("name", "")), str(r.get("name", ""))): quantity(r.get("nominalQuota", 0))
               for g in spec.get("resourceGroups") or [] for f in g.get("flavors") or []
               for r in f.get("resources") or []}
    reserved = _flavor_totals(status.get("flavorsReservation"), "total")
    used = _flavor_totals(status.get("flavorsUsage"), "total")
    borrowed = _flavor_totals(status.get("flavorsReservation"), "borrowed")
    keys = list(dict.fromkeys([*nominal, *reserved, *used]))
    return tuple(QuotaUse(f, r, nominal.get((f, r), 0.0), reserved.get((f, r), 0.0), used.get((f, r), 0.0),
                          borrowed.get((f, r), 0.0)) for f, r in keys)


def _count(status: Obj, field: str) -> int:
    try:
        return int(status.get(field) or 0)
    except (TypeError, ValueError):
        return 0


def _active(status: Obj) -> str:
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "Active"), None)
    if cond is None:
        return ""
    return "True" if cond.get("status") == "True" else f"{cond.get('status', '')} ({cond.get('reason', '')})"


def cluster_queue_info(cq: Obj) -> ClusterQueueInfo:
    """A Kueue ClusterQueue (v1beta2 names its cohort spec.cohortName, v1beta1 spec.cohort)."""
    spec, status = cq.get("spec") or {}, cq.get("status") or {}
    cohort = spec.get("cohortName") or spec.get("cohort") or ""
    return ClusterQueueInfo(
        name=str(cq.get("metadata", {}).get("name", "")), cohort=str(cohort),
        pending=_count(status, "pendingWorkloads"), reserving=_count(status, "reservingWorkloads"),
        admitted=_count(status, "admittedWorkloads"), quotas=_quotas(spec, status), active=_active(status))


def local_queue_info(lq: Obj) -> LocalQueueInfo:
    meta, status = lq.get("metadata") or {}, lq.get("status") or {}
    return LocalQueueInfo(
        namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
        cluster_queue=str((lq.get("spec") or {}).get("clusterQueue", "")), pending=_count(status, "pendingWorkloads"),
        reserving=_count(status, "reservingWorkloads"), admitted=_count(status, "admittedWorkloads"))


def usage_of(node_metrics: list[Obj], pod_metrics: list[Obj]) -> Usage:
    """NodeMetrics and PodMetrics items (metrics.k8s.io/v1beta1) as what each node and pod uses."""
    nodes = {str(n.get("metadata", {}).get("name", "")): resources(n.get("usage")) for n in node_metrics}
    pods: dict[tuple[str, str], Resources] = {}
    for p in pod_metrics:
        meta = p.get("metadata", {})
        pods[(str(meta.get("namespace", "")), str(meta.get("name", "")))] = sum(
            (resources(c.get("usage")) for c in p.get("containers", [])), Resources())
    return Usage(nodes=nodes, pods=pods)


def parse_all(model: Callable[[Obj], M], items: Iterable[Obj], kind: str) -> Listing[M]:
    """Each item as its model; one problem line per item that does not fit it (never raises)."""
    out: Listing[M] = Listing(items=[])
    for item in items:
        try:
            out.items.append(model(item))
        except (ValidationError, ValueError, TypeError) as e:
            meta = item.get("metadata", {}) if isinstance(item, dict) else {}
            first = str(e).splitlines()[:3]
            out.problems.append(f"{kind} {meta.get('namespace', '?')}/{meta.get('name', '?')}: {' '.join(first)}")
    return out


def matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    """Equality-based selection; an empty value means "has the label"."""
    return all((k in labels) if v == "" else labels.get(k) == v for k, v in selector.items())


def selector_string(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" if v else k for k, v in sorted(selector.items()))
