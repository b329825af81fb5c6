"""The cluster page's view model: each node's CPU, memory and GPU capacity next to what Kubeforge's
pods request on it (pods that still hold resources: not Succeeded or Failed) and, when the cluster
serves the resource metrics API, what is in use on it (every pod's, Kubeforge's or not); the same per
job. Requested and in use are different numbers and are labelled so: a pod may use less than it
requested, or more CPU where no limit stops it."""

from __future__ import annotations

from dataclasses import dataclass

from kubeforge_api.constants import LABEL_JOB, LABEL_SERVING

from ..format import size
from ..source import NodeInfo, PodInfo, Resources, Usage

FINISHED = frozenset({"Succeeded", "Failed"})
NOT_MEASURED = "n/a"


@dataclass(frozen=True)
class NodeRow:
    node: str
    ready: bool
    cpu_requested: str  # requested by Kubeforge / allocatable, cores
    cpu_requested_share: float  # 0..1
    cpu_in_use: str  # in use on the node (all pods) / allocatable, cores; n/a without metrics
    cpu_in_use_share: float | None
    memory_requested: str
    memory_requested_share: float
    memory_in_use: str
    memory_in_use_share: float | None
    gpus_requested: str
    gpus_requested_share: float
    pods: int


def _share(used: int, total: int) -> float:
    return min(used / total, 1.0) if total > 0 else 0.0


def _cores(m: int) -> str:
    return f"{m / 1000:.3g}" if m % 1000 else f"{m // 1000}"


def _live(pods: list[PodInfo]) -> list[PodInfo]:
    return [p for p in pods if p.phase not in FINISHED and p.node]


def node_rows(nodes: list[NodeInfo], pods: list[PodInfo], usage: Usage | None = None) -> list[NodeRow]:
    live = _live(pods)
    out = []
    for n in sorted(nodes, key=lambda n: n.name):
        mine = [p for p in live if p.node == n.name]
        req = sum((p.requests for p in mine), Resources())
        a = n.allocatable
        used = usage.nodes.get(n.name) if usage else None
        out.append(NodeRow(
            n.name, n.ready, f"{_cores(req.cpu_m)} / {_cores(a.cpu_m)}", _share(req.cpu_m, a.cpu_m),
            f"{_cores(used.cpu_m)} / {_cores(a.cpu_m)}" if used else NOT_MEASURED,
            _share(used.cpu_m, a.cpu_m) if used else None,
            f"{size(req.memory)} / {size(a.memory)}", _share(req.memory, a.memory),
            f"{size(used.memory)} / {size(a.memory)}" if used else NOT_MEASURED,
            _share(used.memory, a.memory) if used else None,
            f"{req.gpus} / {a.gpus}", _share(req.gpus, a.gpus), len(mine)))
    return out


def totals(nodes: list[NodeInfo], pods: list[PodInfo]) -> tuple[Resources, Resources]:
    """(allocatable of all nodes, requested by Kubeforge's live pods)."""
    return sum((n.allocatable for n in nodes), Resources()), sum((p.requests for p in _live(pods)), Resources())


def in_use(nodes: list[NodeInfo], usage: Usage | None) -> Resources | None:
    """CPU and memory in use on these nodes (all pods), None without metrics."""
    if usage is None:
        return None
    return sum((usage.nodes[n.name] for n in nodes if n.name in usage.nodes), Resources())


def _job_key(p: PodInfo) -> tuple[str, str, str] | None:
    if LABEL_JOB in p.labels:
        return p.namespace, "TrainingJob", p.labels[LABEL_JOB]
    if LABEL_SERVING in p.labels:
        return p.namespace, "ServingJob", p.labels[LABEL_SERVING]
    return None


def job_rows(pods: list[PodInfo], usage: Usage | None = None) -> list[dict[str, object]]:
    """What each job's live pods request and, with metrics, use."""
    by_job: dict[tuple[str, str, str], list[PodInfo]] = {}
    for p in pods:
        key = _job_key(p)
        if p.phase not in FINISHED and key is not None:
            by_job.setdefault(key, []).append(p)
    out: list[dict[str, object]] = []
    for (ns, kind, name), ps in sorted(by_job.items()):
        r = sum((p.requests for p in ps), Resources())
        measured = [usage.pods[(p.namespace, p.name)] for p in ps if (p.namespace, p.name) in usage.pods] if usage \
            else []
        used = sum(measured, Resources())
        out.append({"namespace": ns, "kind": kind, "job": name, "pods": len(ps),
                    "cpu requested": _cores(r.cpu_m), "cpu in use": _cores(used.cpu_m) if measured else NOT_MEASURED,
                    "memory requested": size(r.memory),
                    "memory in use": size(used.memory) if measured else NOT_MEASURED,
                    "gpus": r.gpus, "nodes": ", ".join(sorted({p.node for p in ps if p.node}))})
    return out
