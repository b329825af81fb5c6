"""Step: what is served and by how many: `status.model`, the main track's replicas and ready
replicas, and the canary's (its model, traffic share and replicas) when one is configured."""

from __future__ import annotations

from kubeforge_api.constants import LABEL_TRACK
from kubeforge_api.servingjob import CanaryStatus, ResolvedModel

from ..plan import Obj
from ..render.servingjob import CANARY, MAIN
from .context import ServingPass


def _tracks(p: ServingPass) -> dict[str, Obj]:
    """The observed Deployment status per track label."""
    return {str((d["metadata"].get("labels") or {}).get(LABEL_TRACK)): d.get("status") or {}
            for d in p.world.owned("Deployment")}


def replicas_observed(p: ServingPass) -> bool:
    assert p.main is not None, "the resolution step runs first"
    tracks = _tracks(p)
    main, canary = tracks.get(MAIN, {}), tracks.get(CANARY, {})
    p.status["model"] = p.main.dump()
    p.status["replicas"] = int(main.get("replicas", 0))
    p.status["readyReplicas"] = int(main.get("readyReplicas", 0))
    if p.spec.canary is None:
        p.status.pop("canary", None)
        return False
    p.status["canary"] = CanaryStatus(
        traffic_percent=p.spec.canary.traffic_percent, replicas=int(canary.get("replicas", 0)),
        ready_replicas=int(canary.get("readyReplicas", 0)),
        model=p.canary if isinstance(p.canary, ResolvedModel) else None).dump()
    return False
