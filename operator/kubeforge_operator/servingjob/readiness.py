"""Step, the last: what the servers report. `Ready` when at least one server of the main track
serves behind the ServingJob's own Service (`RolloutInProgress` while a rollout runs, else
`ModelLoaded`). `Degraded` when a revision cannot serve, with the first cause found: a child the
API server refused, a server that exited because its model cannot be loaded (named by the user's
uri), a server pod that cannot be scheduled or started or ran out of memory, a Deployment that
cannot create its pods, or a canary whose model does not resolve. Without a serving server the
cause is also why `Ready` is False."""

from __future__ import annotations

from dataclasses import dataclass

from kubeforge_api.constants import LABEL_TRACK, Reason
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND, MODEL_MOUNT
from kubeforge_api.servingjob import ServingConditionType, ServingReason

from ..observe import view
from ..plan import Obj, World
from ..render.servingjob import CANARY, MAIN
from .context import ServingPass
from .model import Unresolved

LOAD_FAILURES = {EXIT_MODEL_LOAD_FAILED: ServingReason.MODEL_LOAD_FAILED,
                 EXIT_MODEL_NOT_FOUND: ServingReason.MODEL_NOT_FOUND}
OOM_ADVICE = "a server ran out of memory: raise spec.resources.limits.memory"
Trouble = tuple[str, str]  # (reason, message)


@dataclass(frozen=True)
class Verdict:
    """The Ready and Degraded conditions of a pass."""

    ready: bool
    reason: str
    message: str
    degraded: Trouble | None = None  # when a revision cannot serve


def _terminations(pod: Obj) -> list[Obj]:
    return [t for cs in (pod.get("status") or {}).get("containerStatuses") or []
            for state in (cs.get("state") or {}, cs.get("lastState") or {}) if (t := state.get("terminated"))]


def load_failure(pods: list[Obj], uris: dict[str, str]) -> Trouble | None:
    """A server that exited because its model cannot be loaded: (reason, its one-line message), the
    container's mount replaced by the uri the user gave (`uris` by track)."""
    for pod in pods:
        uri = uris.get((pod["metadata"].get("labels") or {}).get(LABEL_TRACK, ""), "")
        for t in _terminations(pod):
            if t.get("exitCode") in LOAD_FAILURES:
                lines = (t.get("message") or "").strip().splitlines()
                line = lines[-1] if lines else "cannot load the model"
                return LOAD_FAILURES[t["exitCode"]], f"pod {pod['metadata']['name']}: " + \
                    (line.replace(MODEL_MOUNT, uri) if uri else line)
    return None


def pod_trouble(pods: list[Obj]) -> Trouble | None:
    """A server pod that cannot be scheduled or started, or that ran out of memory."""
    for pod in pods:
        if any(t.get("reason") == "OOMKilled" for t in _terminations(pod)):
            return Reason.OOM_KILLED, f"pod {pod['metadata']['name']}: {OOM_ADVICE}"
        blocked = view(pod).blocked
        if blocked is not None and blocked[0] != Reason.CONTAINER_CREATING:
            return blocked
    return None


def create_failure(deployments: list[Obj]) -> Trouble | None:
    """A Deployment whose pods cannot be created (its ReplicaFailure condition)."""
    for d in deployments:
        for c in (d.get("status") or {}).get("conditions") or []:
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
                return ServingReason.FAILED_CREATE, f"Deployment {d['metadata']['name']}: {c.get('message', '')}"
    return None


def trouble(world: World, uris: dict[str, str]) -> Trouble | None:
    """The first cause found why a revision cannot serve; what the API server refused outranks the rest."""
    if world.refusals:
        r = world.refusals[0]
        return r.reason, f"the API server refused to create {r.message}"
    pods = world.owned("Pod")
    return load_failure(pods, uris) or pod_trouble(pods) or create_failure(world.owned("Deployment"))


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


def ready_or_why_not(p: ServingPass) -> bool:
    v = verdict(p.spec.suspend, p.world, _uris(p))
    p.condition(ServingConditionType.READY, v.ready, v.reason, v.message)
    degraded = v.degraded
    if degraded is None and isinstance(p.canary, Unresolved):
        degraded = (p.canary.reason, f"canary: {p.canary.message}")
    if degraded:
        p.condition(ServingConditionType.DEGRADED, True, degraded[0], degraded[1])
    else:
        p.condition(ServingConditionType.DEGRADED, False, v.reason, "every server that should serve does")
    return True
