"""Step: servers that could neither find nor load the model before any of them served are not left
to crash-loop. The first exit that says so (read once, from a termination message: the server's,
or the storage initializer's when an s3:// model is not found, its credentials are refused or its
copy is corrupt) stops the main track: its Deployment goes to 0 replicas and `status.stopped` keeps
the reason, so Ready and Degraded keep saying it after the pods are gone. A new spec generation, or
a model that resolves elsewhere, tries again. A broken rollout while an older model serves is not
stopped: the serving revision keeps serving, and Degraded says why the new one cannot. An object
store that cannot be reached is no reason to stop: it may come back without any change, so the
initializer keeps retrying (with the kubelet's back-off) while Ready says StorageUnavailable."""

from __future__ import annotations

from kubeforge_api.constants import LABEL_TRACK
from kubeforge_api.servingjob import ServingReason, StoppedModel

from ..render.servingjob import MAIN
from .context import ServingPass
from .servers import load_failure

# What no retry can fix without a change (of the spec, the model or the Secret).
STOPPING = frozenset({ServingReason.MODEL_NOT_FOUND, ServingReason.MODEL_LOAD_FAILED,
                      ServingReason.STORAGE_ACCESS_DENIED})


def _still_stopped(p: ServingPass) -> StoppedModel | None:
    old = p.old.get("stopped")
    if not old or p.main is None:
        return None
    stopped = StoppedModel.model_validate(old)
    return stopped if (stopped.generation, stopped.uri) == (p.ref.generation, p.main.uri) else None


def unloadable_model_stopped(p: ServingPass) -> bool:
    assert p.main is not None, "the resolution step runs first"
    p.stopped = _still_stopped(p)
    if p.stopped is None and not p.status.get("model"):
        main = [pod for pod in p.world.owned("Pod") if (pod["metadata"].get("labels") or {}).get(LABEL_TRACK) == MAIN]
        failure = load_failure(main, {MAIN: p.main.uri})
        if failure is not None and failure[0] in STOPPING:
            p.stopped = StoppedModel(uri=p.main.uri, generation=p.ref.generation, reason=ServingReason(failure[0]),
                                     message=failure[1])
    if p.stopped is None:
        p.status.pop("stopped", None)
    else:
        p.status["stopped"] = p.stopped.dump()
    return False
