"""Step, the last: what the servers report. `Ready` when at least one server of the main track
serves behind the ServingJob's own Service (`RolloutInProgress` while a rollout runs, else
`ModelLoaded`). `Degraded` when a revision cannot serve, with the first cause found: a child the
API server refused, a server that exited because its model cannot be loaded (named by the user's
uri), a server pod that cannot be scheduled or started or ran out of memory, a Deployment that
cannot create its pods, or a canary whose model does not resolve. Without a serving server the
cause is also why `Ready` is False."""

from __future__ import annotations

from dataclasses import dataclass

from kubeforge_api.servingjob import ServingConditionType, ServingReason

from ..plan import Obj, World
from ..render.servingjob import CANARY, MAIN
from .context import ServingPass
from .model import Unresolved
from .servers import Trouble, trouble


@dataclass(frozen=True)
class Verdict:
    """The Ready and Degraded conditions of a pass."""

    ready: bool
    reason: str
    message: str
    degraded: Trouble | None = None  # when a revision cannot serve


def _rolling(deployment: Obj) -> bool:
    st = deployment.get("status") or {}
    return int(st.get("updatedReplicas", 0)) < int(st.get("replicas", 0)) or \
        int(st.get("observedGeneration", 0)) < int(deployment["metadata"].get("generation", 0))


def _service_refused(world: World) -> bool:
    """Whether the Service behind `status.url` is not the ServingJob's own (its create was refused)."""
    return any(r.kind == "Service" for r in world.refusals)


def verdict(suspended: bool, world: World, uris: dict[str, str]) -> Verdict:
    """Ready when at least one server of the main track serves behind the ServingJob's own Service."""
    deployments = {d["metadata"]["name"]: d for d in world.owned("Deployment")}
    main = deployments.get(world.obj["metadata"]["name"]) or {}
    ready = int((main.get("status") or {}).get("readyReplicas", 0))
    cause = trouble(world, uris)
    if suspended:
        return Verdict(False, ServingReason.SUSPENDED, "the ServingJob is suspended; its servers are scaled to 0")
    if ready and not _service_refused(world):
        reason = ServingReason.ROLLOUT_IN_PROGRESS if _rolling(main) else ServingReason.MODEL_LOADED
        return Verdict(True, reason, f"{ready} server(s) ready", cause)
    if cause:
        return Verdict(False, cause[0], cause[1], cause)
    return Verdict(False, ServingReason.MODEL_LOADING, "the servers are loading the model")


def _uris(p: ServingPass) -> dict[str, str]:
    """The uri each track serves or rolls out, as the user gave or the TrainingJob published it."""
    out = {MAIN: p.main.uri} if p.main is not None else {}
    if p.canary is not None and not isinstance(p.canary, Unresolved):
        out[CANARY] = p.canary.uri
    return out


def _stopped(p: ServingPass) -> Verdict | None:
    if p.stopped is None:
        return None
    why = (p.stopped.reason.value, f"{p.stopped.message}; the servers are stopped until the spec changes")
    return Verdict(False, why[0], why[1], why)


def ready_or_why_not(p: ServingPass) -> bool:
    v = _stopped(p) or verdict(p.spec.suspend, p.world, _uris(p))
    p.condition(ServingConditionType.READY, v.ready, v.reason, v.message)
    degraded = v.degraded
    if degraded is None and isinstance(p.canary, Unresolved):
        degraded = (p.canary.reason, f"canary: {p.canary.message}")
    if degraded:
        p.condition(ServingConditionType.DEGRADED, True, degraded[0], degraded[1])
    else:
        p.condition(ServingConditionType.DEGRADED, False, v.reason, "every server that should serve does")
    return True
