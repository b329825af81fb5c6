"""Pure conversions from Kubernetes objects (their JSON form, camelCase dicts) to the dashboard's
records, and from API answers to typed models. Kept apart from the client so they are unit-tested
without a cluster; quantities are parsed here because the dashboard only needs sums of requests."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .source import ContainerState, EventInfo, Listing, NodeInfo, PodInfo, Resources, Usage

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


def node_info(node: Obj) -> NodeInfo:
    status = node.get("status", {})
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    return NodeInfo(name=str(node.get("metadata", {}).get("name", "")), ready=ready,
                    capacity=resources(status.get("capacity")), allocatable=resources(status.get("allocatable")),
                    labels=dict(node.get("metadata", {}).get("labels") or {}))


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
