"""Step: the models to serve, resolved (a TrainingJob's artifact or a `pvc://` uri). Until the
main model resolves, only the Service and the PodDisruptionBudget exist (Deployments already
rolled out keep serving) and `Ready=False` says what it waits for; waiting is not failing."""

from __future__ import annotations

from kubeforge_api.servingjob import ServingConditionType, service_url

from ..children import diff_children
from ..render.servingjob import render_pdb, render_service
from .context import CHILD_KINDS, ServingPass
from .model import Unresolved, resolve

WAIT_FOR_MODEL_SECONDS = 5.0


def model_unresolved(p: ServingPass) -> bool:
    main = resolve(p.spec.model, p.jobs)
    p.canary = resolve(p.spec.canary.model, p.jobs) if p.spec.canary else None
    p.status["url"] = service_url(p.ref.name, p.ref.namespace)
    if not isinstance(main, Unresolved):
        p.main = main
        return False
    diff_children(p.plan, p.world, [render_service(p.ref), render_pdb(p.ref)], CHILD_KINDS,
                  keep=frozenset({"Deployment"}))
    p.condition(ServingConditionType.READY, False, main.reason, main.message)
    p.plan.requeue(WAIT_FOR_MODEL_SECONDS)
    return True
