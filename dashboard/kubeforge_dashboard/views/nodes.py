"""The cluster page's node table: each node's Ready condition and since when, its node-loss taints
(unreachable, not-ready: what the node lifecycle controller puts on a lost node) apart from its other
taints, its CPU and memory capacity and allocatable, and which Kubeforge jobs' pods run on it (a
TrainingJob's rank or role, a ServingJob's track). Pure: nodes, pods and `now` in, rows out.

Bounded for large clusters: at most `limit` nodes (NotReady first, then by name), at most
MAX_TAINTS taints and MAX_PODS_PER_NODE pods per cell, each table and cell saying what it left out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from kubeforge_api.constants import LABEL_JOB, LABEL_RANK, LABEL_ROLE, LABEL_SERVING, LABEL_TRACK, ROLE_NODE

from ..format import age_seconds, duration, size
from ..source import NodeInfo, PodInfo, Taint

MAX_NODES = 100
MAX_TAINTS = 5
MAX_PODS_PER_NODE = 12
MAX_NAMED_NOT_READY = 5
# What the node lifecycle controller (and the node's own status) taints a lost or unready node with.
NODE_LOSS_TAINTS = frozenset({"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"})
FINISHED = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class NodeTable:
    rows: list[dict[str, object]] = field(default_factory=list)
    left_out: int = 0  # nodes not shown (over the limit)


def status(node: NodeInfo) -> str:
    """Ready, or NotReady (also when the condition is Unknown or missing); cordoned nodes say so."""
    text = "🟢 Ready" if node.ready else "🔴 NotReady"
    return f"{text}, cordoned" if node.unschedulable else text


def since(value: str, now: datetime) -> str:
    age = age_seconds(value, now)
    return "" if age is None else f"{duration(age)} ago"


def taint_text(t: Taint, now: datetime) -> str:
    text = f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}"
    return f"{text} ({since(t.added, now)})" if t.added else text


def _capped(items: list[str], limit: int, what: str) -> str:
    shown = items[:limit]
    more = len(items) - len(shown)
    return "; ".join(shown) + (f"; +{more} more {what}" if more else "")


def taints(node: NodeInfo, now: datetime) -> tuple[str, str]:
    """(node-loss taints, other taints), each one line."""
    lost = [taint_text(t, now) for t in node.taints if t.key in NODE_LOSS_TAINTS]
    other = [taint_text(t, now) for t in node.taints if t.key not in NODE_LOSS_TAINTS]
    return _capped(lost, MAX_TAINTS, "taints"), _capped(other, MAX_TAINTS, "taints")


def pod_place(p: PodInfo) -> tuple[str, str] | None:
    """(job, what this pod is to it) for a Kubeforge job's pod, None for any other pod."""
    if LABEL_JOB in p.labels:
        role, rank = p.labels.get(LABEL_ROLE, ""), p.labels.get(LABEL_RANK, "")
        role = "rank" if role == ROLE_NODE else role  # a training node's pod: its torchrun node rank
        return f"TrainingJob {p.namespace}/{p.labels[LABEL_JOB]}", " ".join(x for x in (role, rank) if x) or p.name
    if LABEL_SERVING in p.labels:
        return f"ServingJob {p.namespace}/{p.labels[LABEL_SERVING]}", p.labels.get(LABEL_TRACK) or "server"
    return None


def _order(place: tuple[str, str]) -> tuple[str, int, str, int]:
    """Per job, ranks in numeric order (rank 2 before rank 10), then the stage pods."""
    job, what = place
    role, _, rank = what.rpartition(" ")
    return (job, 0, role, int(rank)) if rank.isdigit() else (job, 1, what, 0)


def jobs_on(pods: list[PodInfo]) -> str:
    """`TrainingJob ns/a: rank 0, rank 1, compress; ServingJob ns/b: main x2` for one node's live pods."""
    places = sorted(filter(None, (pod_place(p) for p in pods)), key=_order)
    shown = places[:MAX_PODS_PER_NODE]
    by_job: dict[str, Counter[str]] = {}
    for job, what in shown:
        by_job.setdefault(job, Counter())[what] += 1
    parts = [f"{job}: " + ", ".join(w if n == 1 else f"{w} x{n}" for w, n in whats.items())
             for job, whats in by_job.items()]
    more = len(places) - len(shown)
    return "; ".join(parts) + (f"; +{more} more pods" if more else "")


def _cores(m: int) -> str:
    return f"{m / 1000:.3g}" if m % 1000 else f"{m // 1000}"


def row(node: NodeInfo, pods: list[PodInfo], now: datetime) -> dict[str, object]:
    lost, other = taints(node, now)
    c, a = node.capacity, node.allocatable
    return {"node": node.name, "status": status(node), "since": since(node.ready_since, now),
            "reason": node.ready_reason, "node-loss taints": lost, "other taints": other, "jobs here": jobs_on(pods),
            "kubeforge pods": len([p for p in pods if pod_place(p)]),
            "cpu capacity": _cores(c.cpu_m), "cpu allocatable": _cores(a.cpu_m),
            "memory capacity": size(c.memory), "memory allocatable": size(a.memory)}


def node_table(nodes: list[NodeInfo], pods: list[PodInfo], now: datetime, limit: int = MAX_NODES) -> NodeTable:
    """One row per node (NotReady first), with the live Kubeforge pods placed on it."""
    by_node: dict[str, list[PodInfo]] = {}
    for p in pods:
        if p.node and p.phase not in FINISHED:
            by_node.setdefault(p.node, []).append(p)
    ordered = sorted(nodes, key=lambda n: (n.ready, n.name))
    return NodeTable([row(n, by_node.get(n.name, []), now) for n in ordered[:limit]], max(len(ordered) - limit, 0))


def not_ready(nodes: list[NodeInfo], now: datetime) -> str | None:
    """One line naming the NotReady nodes and since when, None when every node is Ready."""
    down = sorted((n for n in nodes if not n.ready), key=lambda n: n.name)
    if not down:
        return None
    named = [f"{n.name} (since {since(n.ready_since, now)})" if n.ready_since else n.name
             for n in down[:MAX_NAMED_NOT_READY]]
    more = len(down) - len(named)
    return (f"{len(down)} of {len(nodes)} nodes NotReady: " + ", ".join(named)
            + (f" and {more} more" if more else ""))
