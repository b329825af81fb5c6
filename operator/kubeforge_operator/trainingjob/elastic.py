"""Elastic jobs (`spec.elastic`): torchrun's c10d rendezvous re-forms the world when a worker goes or
comes, so the operator must not restart the gang for it. A worker (not node rank 0) that is on a
lost node, disrupted, being deleted or gone is *ridden out* while node rank 0 and at least
`minNodes` workers still run: no failure is counted, its pod is deleted (force-deleted once its
node has been lost for `node_fence_seconds`: a graceful delete on a dead node never completes) and
created again under the same name and attempt, so it schedules when capacity returns and joins the
same rendezvous (`<uid>-<attempt>`), which makes the survivors re-rendezvous and scale out.

Node rank 0 hosts the c10d store (`is_host`): its loss, or falling below `minNodes`, restarts the
gang as before (a `NodeLost` disruption for a lost node). Pure: reads a `Pass`, amends its plan."""

from __future__ import annotations

from datetime import timedelta

from kubeforge_api.constants import ROLE_NODE

from ..observe import PodView
from ..plan import ChildRef, Obj, parse_ts
from ..render.trainingjob import pod_name
from .context import Pass


def _lost(p: Pass, node: str) -> Obj:
    """The projection of the lost node `node` (see nodes.project_node), `{}` when it is fine."""
    return (p.world.related.get("Node") or {}).get(node) or {} if node else {}


def _gone(p: Pass, v: PodView) -> bool:
    return not v.finished and (bool(_lost(p, v.node)) or v.deleting or v.disrupted)


def _workers(p: Pass) -> list[PodView]:
    return [v for v in p.current if v.role == ROLE_NODE]


def rank0_name(p: Pass) -> str:
    return pod_name(p.ref.name, ROLE_NODE, 0)


def riding_out(p: Pass) -> frozenset[str]:
    """Names of the current attempt's workers whose loss the elastic job rides out without a gang
    restart; empty for a job that is not elastic, when node rank 0 is among them (it hosts the
    rendezvous store) or when fewer than `minNodes` running workers would remain. Once rank 0 has
    succeeded, training is over: the workers that did not succeed no longer matter."""
    elastic = p.spec.elastic if p.valid_spec is not None else None
    if elastic is None:
        return frozenset()
    workers, rank0 = _workers(p), rank0_name(p)
    if any(v.name == rank0 and v.phase == "Succeeded" for v in workers):
        return frozenset(v.name for v in workers if v.name != rank0 and v.phase != "Succeeded")
    names = {pod_name(p.ref.name, ROLE_NODE, i) for i in range(p.spec.nodes)}
    gone = {v.name for v in workers if _gone(p, v)} | (names - {v.name for v in workers} - p.expected)
    survivors = {v.name for v in workers if v.running and v.name not in gone}
    if not gone or rank0 in gone or rank0 not in survivors or len(survivors) < elastic.min_nodes:
        return frozenset()
    return frozenset(gone)


def _fenced(p: Pass, v: PodView) -> bool:
    since = _lost(p, v.node).get("lostSince")
    return bool(since) and p.now >= parse_ts(str(since)) + timedelta(seconds=p.cfg.node_fence_seconds)


def shrink(p: Pass, victims: list[PodView]) -> None:
    """Delete the ridden-out pods (force once fenced; requeue until then): `create_missing` creates
    them again once they are gone."""
    refs = [ChildRef("Pod", v.name, v.uid, force=_fenced(p, v)) for v in victims if not v.deleting or _fenced(p, v)]
    names = {r.name for r in refs}
    p.plan.delete = [d for d in p.plan.delete if d.name not in names] + refs
    if any(not _fenced(p, v) and _lost(p, v.node) for v in victims):
        p.plan.requeue(max(p.cfg.node_fence_seconds, 0.5))


def running_elastic(p: Pass) -> str | None:
    """While an elastic job runs on fewer workers than `spec.nodes`: the Running message saying so
    (how many, and what the missing ones wait for); None otherwise."""
    elastic = p.spec.elastic
    workers = _workers(p)
    running = [v for v in workers if v.running and not _lost(p, v.node)]
    if elastic is None or rank0_name(p) not in {v.name for v in running} or \
            not elastic.min_nodes <= len(running) < p.spec.nodes:
        return None
    waiting = [f"{v.name} ({_why(p, v)})" for v in workers if v not in running and not v.finished]
    absent = p.spec.nodes - len(workers)
    if absent > 0:
        waiting.append(f"{absent} pod(s) being recreated")
    return (f"elastic: training on {len(running)} of {p.spec.nodes} worker pods (minNodes {elastic.min_nodes}); "
            f"waiting to scale out: {', '.join(waiting) or 'pods finishing'}")


def _why(p: Pass, v: PodView) -> str:
    lost = _lost(p, v.node)
    if lost:
        return f"node {v.node} lost: {lost.get('why', '')}"
    if v.deleting:
        return "being deleted"
    return v.blocked[0] if v.blocked else v.phase or "pending"
