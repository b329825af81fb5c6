"""Step: what is served and by how many. `status.model` is the model the main track's servers
serve: it moves to the resolved model only once the main Deployment runs the form this pass
renders, every server is updated and one is ready; until then that model is `status.targetModel`
(a broken rollout never makes the status name a model nobody serves). Also the main track's
replicas and ready replicas, and the canary's (its model, traffic share and replicas)."""

from __future__ import annotations

from kubeforge_api.constants import LABEL_TRACK
from kubeforge_api.servingjob import CanaryStatus, ResolvedModel

from ..plan import Obj
from ..render.common import spec_hash
from ..render.servingjob import CANARY, MAIN
from .context import ServingPass


def _tracks(p: ServingPass) -> dict[str, Obj]:
    """The observed Deployment status per track label."""
    return {str((d["metadata"].get("labels") or {}).get(LABEL_TRACK)): d.get("status") or {}
            for d in p.world.owned("Deployment")}


def _serves_wanted_form(p: ServingPass) -> bool:
    """Whether the main Deployment runs the rendered form this pass wants, every server updated and one ready."""
    current = next((d for d in p.world.owned("Deployment") if d["metadata"]["name"] == p.ref.name), None)
    want = p.wanted.get(("Deployment", p.ref.name))
    if current is None or want is None or spec_hash(current) != spec_hash(want):
        return False
    st = current.get("status") or {}
    return int(st.get("observedGeneration", 0)) >= int(current["metadata"].get("generation", 0)) and \
        int(st.get("updatedReplicas", 0)) >= int(st.get("replicas", 0)) and int(st.get("readyReplicas", 0)) > 0


def _served_model(p: ServingPass) -> None:
    assert p.main is not None, "the resolution step runs first"
    target = p.main.dump()
    if _serves_wanted_form(p):
        p.status["model"] = target
    if p.status.get("model") == target:
        p.status.pop("targetModel", None)
    else:
        p.status["targetModel"] = target


def replicas_observed(p: ServingPass) -> bool:
    tracks = _tracks(p)
    main, canary = tracks.get(MAIN, {}), tracks.get(CANARY, {})
    _served_model(p)
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
