"""Step, the last: what the servers report. `Ready` when at least one server of the main track
serves (`RolloutInProgress` while a rollout runs, else `ModelLoaded`); `Degraded` when a revision
cannot serve: a server that exited because its model cannot be loaded, a child the API server
refused, or a canary whose model does not resolve."""

from __future__ import annotations

from dataclasses import dataclass

from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND
from kubeforge_api.servingjob import ServingConditionType, ServingReason

from ..plan import Obj, World
from .context import ServingPass
from .model import Unresolved

LOAD_FAILURES = {EXIT_MODEL_LOAD_FAILED: ServingReason.MODEL_LOAD_FAILED,
                 EXIT_MODEL_NOT_FOUND: ServingReason.MODEL_NOT_FOUND}


@dataclass(frozen=True)
class Verdict:
    """The Ready and Degraded conditions of a pass."""

    ready: bool
    reason: str
    message: str
    degraded: tuple[str, str] | None = None  # (reason, message) when a revision cannot serve


def load_failure(pods: list[Obj]) -> tuple[str, str] | None:
    """A server that exited because its model cannot be loaded: (reason, its one-line message)."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            for state in (cs.get("state") or {}, cs.get("lastState") or {}):
                t = state.get("terminated") or {}
                if t.get("exitCode") in LOAD_FAILURES:
                    message = (t.get("message") or "").strip().splitlines()
                    name = pod["metadata"]["name"]
                    return LOAD_FAILURES[t["exitCode"]], f"pod {name}: {message[-1] if message else 'cannot load'}"
    return None


def _rolling(deployment: Obj) -> bool:
    st = deployment.get("status") or {}
    return int(st.get("updatedReplicas", 0)) < int(st.get("replicas", 0)) or \
        int(st.get("observedGeneration", 0)) < int(deployment["metadata"].get("generation", 0))


def verdict(suspended: bool, world: World) -> Verdict:
    """Ready when at least one server of the main track serves; Degraded when a server cannot load."""
    deployments = {d["metadata"]["name"]: d for d in world.owned("Deployment")}
    main = deployments.get(world.obj["metadata"]["name"]) or {}
    ready = int((main.get("status") or {}).get("readyReplicas", 0))
    failure = load_failure(world.owned("Pod"))
    if world.refusals:  # what the API server refused outranks what the servers say
        r = world.refusals[0]
        failure = (r.reason, f"the API server refused to create {r.message}")
    if suspended:
        return Verdict(False, ServingReason.SUSPENDED, "the ServingJob is suspended; its servers are scaled to 0")
    if ready:
        reason = ServingReason.ROLLOUT_IN_PROGRESS if _rolling(main) else ServingReason.MODEL_LOADED
        return Verdict(True, reason, f"{ready} server(s) ready", failure)
    if failure:
        return Verdict(False, failure[0], failure[1], failure)
    return Verdict(False, ServingReason.MODEL_LOADING, "the servers are loading the model")


def ready_or_why_not(p: ServingPass) -> bool:
    v = verdict(p.spec.suspend, p.world)
    p.condition(ServingConditionType.READY, v.ready, v.reason, v.message)
    degraded = v.degraded
    if degraded is None and isinstance(p.canary, Unresolved):
        degraded = (p.canary.reason, f"canary: {p.canary.message}")
    if degraded:
        p.condition(ServingConditionType.DEGRADED, True, degraded[0], degraded[1])
    else:
        p.condition(ServingConditionType.DEGRADED, False, v.reason, "every server that should serve does")
    return True
