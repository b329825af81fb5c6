"""Step: every child that should exist once the model is resolved: a Deployment per track (main,
and a canary sized by its traffic share), the Service on port 80, a PodDisruptionBudget and, with
autoscaling on CPU, an HPA that owns the main track's replica count (on a server metric, the scaling
step's count is split between the tracks instead). The core's diff creates, updates
(by the hash of the rendered form) and deletes; rolling updates keep the serving revision up."""

from __future__ import annotations

from kubeforge_api.servingjob import ResolvedModel

from ..children import diff_children
from ..plan import Obj
from ..render.servingjob import (
    CANARY,
    MAIN,
    render_deployment,
    render_hpa,
    render_pdb,
    render_service,
    served_volume,
    split,
)
from .context import CHILD_KINDS, ServingPass


def desired(p: ServingPass, main: ResolvedModel) -> list[Obj]:
    """Every child that should exist for the resolved `main` model (and a resolved canary)."""
    spec, ref, image = p.spec, p.ref, p.cfg.default_image
    total = spec.desired_replicas if p.scaled_replicas is None else p.scaled_replicas
    main_n, canary_n = split(total, spec.canary.traffic_percent if spec.canary else 0)
    main_n = 0 if p.stopped is not None else main_n  # a model that cannot load is not left to crash-loop
    hpa = spec.autoscaling is not None and not spec.autoscaling.on_server_metrics and not spec.suspend and \
        p.stopped is None
    out = [render_service(ref), render_pdb(ref),
           render_deployment(ref, spec, MAIN, served_volume(main), image, None if hpa else main_n)]
    if isinstance(p.canary, ResolvedModel):
        out.append(render_deployment(ref, spec, CANARY, served_volume(p.canary), image, canary_n))
    if hpa:
        out.append(render_hpa(ref, spec))
    return out


def children_rolled_out(p: ServingPass) -> bool:
    assert p.main is not None, "the resolution step runs first"
    want = desired(p, p.main)
    p.wanted = {(o["kind"], o["metadata"]["name"]): o for o in want}
    diff_children(p.plan, p.world, want, CHILD_KINDS)
    return False
