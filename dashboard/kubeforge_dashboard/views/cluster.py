"""The cluster page's view model: each node's CPU, memory and GPU capacity next to what Kubeforge's
pods request on it (pods that still hold resources: not Succeeded or Failed), and the same per job."""

from __future__ import annotations

from dataclasses import dataclass

from kubeforge_api.constants import LABEL_JOB, LABEL_SERVING

from ..format import size
from ..source import NodeInfo, PodInfo, Resources

FINISHED = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class NodeRow:
    node: str
    ready: bool
    cpu: str  # used / allocatable
    cpu_used: float  # 0..1
    memory: str
    memory_used: float
    gpus: str
    gpu_used: float
    pods: int


def _share(used: int, total: int) -> float:
    return min(used / total, 1.0) if total > 0 else 0.0


def _cores(m: int) -> str:
    return f"{m / 1000:g}"


def node_rows(nodes: list[NodeInfo], pods: list[PodInfo]) -> list[NodeRow]:
    live = [p for p in pods if p.phase not in FINISHED and p.node]
    out = []
    for n in sorted(nodes, key=lambda n: n.name):
        mine = [p for p in live if p.node == n.name]
        used = sum((p.requests for p in mine), Resources())
        a = n.allocatable
        out.append(NodeRow(n.name, n.ready, f"{_cores(used.cpu_m)} / {_cores(a.cpu_m)}", _share(used.cpu_m, a.cpu_m),
                           f"{size(used.memory)} / {size(a.memory)}", _share(used.memory, a.memory),
                           f"{used.gpus} / {a.gpus}", _share(used.gpus, a.gpus), len(mine)))
    return out


def totals(nodes: list[NodeInfo], pods: list[PodInfo]) -> tuple[Resources, Resources]:
    """(allocatable of all nodes, requested by Kubeforge's live pods)."""
    live = [p for p in pods if p.phase not in FINISHED and p.node]
    return sum((n.allocatable for n in nodes), Resources()), sum((p.requests for p in live), Resources())


def job_rows(pods: list[PodInfo]) -> list[dict[str, object]]:
    """What each job's live pods request."""
    by_job: dict[tuple[str, str, str], list[PodInfo]] = {}
    for p in pods:
        if p.phase in FINISHED:
            continue
        if LABEL_JOB in p.labels:
            key = (p.namespace, "TrainingJob", p.labels[LABEL_JOB])
        elif LABEL_SERVING in p.labels:
            key = (p.namespace, "ServingJob", p.labels[LABEL_SERVING])
        else:
            continue
        by_job.setdefault(key, []).append(p)
    out: list[dict[str, object]] = []
    for (ns, kind, name), ps in sorted(by_job.items()):
        r = sum((p.requests for p in ps), Resources())
        nodes = ", ".join(sorted({p.node for p in ps if p.node}))
        out.append({"namespace": ns, "kind": kind, "job": name, "pods": len(ps), "cpu": _cores(r.cpu_m),
                    "memory": size(r.memory), "gpus": r.gpus, "nodes": nodes})
    return out
