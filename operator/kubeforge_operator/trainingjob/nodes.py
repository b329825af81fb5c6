"""Step: a gang member on a lost node (Ready not True, or tainted unreachable/not-ready) restarts
the gang as a disruption (`NodeLost`, not counted against `backoffLimit`, an Event naming the
node); it outranks whatever its peers reported, as their failures follow from it. Pods of an older
attempt on a lost node are force-deleted once the node is fenced: lost for `node_fence_seconds`
and the newer attempt recorded in status (the core writes status before any delete). Nothing
stops their processes then; the attempt number, the fencing token, keeps their writes out.
An elastic job rides out the loss of a worker other than node rank 0 while `minNodes` still run
(see elastic.py): that pod alone is deleted and recreated, no gang restart."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kubeforge_api.constants import Reason
from kubeforge_api.exitcodes import FailureClass

from ..observe import Failure, PodView
from ..plan import ChildRef, Event, Obj, parse_ts, ts
from .context import Pass
from .elastic import riding_out, shrink
from .failures import restart

LOST_TAINTS = ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")


def project_node(node: Obj) -> Obj:
    """What a pass needs of a Node: `{}` while it is fine, else since when and why it is lost."""
    spec, status = node.get("spec") or {}, node.get("status") or {}
    for t in spec.get("taints") or []:
        if isinstance(t, dict) and t.get("key") in LOST_TAINTS:
            return {"lostSince": _time(t.get("timeAdded")), "why": f"tainted {t['key']}"}
    ready = next((c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") != "True":
        return {"lostSince": _time(ready.get("lastTransitionTime")),
                "why": f"Ready={ready.get('status')} ({ready.get('reason') or 'no reason given'})"}
    return {}


def _time(value: Any) -> str:
    """A timestamp as the API writes it, or the epoch when there is none (lost since long ago)."""
    if isinstance(value, str):
        try:
            return ts(parse_ts(value))
        except ValueError:
            pass
    return "1970-01-01T00:00:00Z"


def lost(p: Pass, node: str) -> Obj:
    """The projection of a lost node the pod runs on, `{}` when it is fine or unknown."""
    return (p.world.related.get("Node") or {}).get(node) or {} if node else {}


def fenced(p: Pass, v: PodView) -> bool:
    """Whether `v` may be force-deleted: an older attempt's pod on a node lost for the fence time."""
    since = lost(p, v.node).get("lostSince")
    if v.attempt >= p.restarts or not since:
        return False
    return p.now >= parse_ts(since) + timedelta(seconds=p.cfg.node_fence_seconds)


def force_fenced(p: Pass) -> None:
    """Force-delete the fenced pods (a graceful delete of them never completes), requeue for the rest."""
    force = {v.name: v for v in p.pods if fenced(p, v)}
    p.plan.delete = [d for d in p.plan.delete if d.name not in force] + \
        [ChildRef("Pod", v.name, v.uid, force=True) for v in force.values()]
    if any(lost(p, v.node) and v.attempt < p.restarts and v.name not in force for v in p.pods):
        p.plan.requeue(max(p.cfg.node_fence_seconds, 0.5))


def node_lost(p: Pass) -> bool:
    victims = [v for v in p.current if not v.finished and lost(p, v.node)]
    if not victims:
        return False
    if {v.name for v in victims} <= riding_out(p):  # elastic: the survivors re-rendezvous without it
        shrink(p, victims)
        return False
    v = victims[0]
    node = lost(p, v.node)
    message = f"node {v.node} of pod {v.name} is lost ({node.get('why', '')})"
    failure = Failure(v.name, "", 0, Reason.NODE_LOST, message, str(node.get("lostSince") or ts(p.now)))
    restart(p, failure, FailureClass.DISRUPTION, message)
    p.plan.events.append(Event("Warning", Reason.NODE_LOST, f"{message}: restarting the gang on the remaining "
                                                            f"nodes from its last checkpoint (a disruption, "
                                                            f"not counted against backoffLimit)"))
    force_fenced(p)
    return True
