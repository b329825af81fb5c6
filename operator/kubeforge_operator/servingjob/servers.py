"""Pure: what a ServingJob's server pods and Deployments say about why a revision cannot serve: a
server that exited because its model cannot be found or loaded (named by the user's uri, not the
container's mount), a pod that cannot be scheduled or started or ran out of memory, a Deployment
that cannot create its pods, or a child the API server refused."""

from __future__ import annotations

from kubeforge_api.constants import LABEL_TRACK, Reason
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND, MODEL_MOUNT
from kubeforge_api.servingjob import ServingReason

from ..observe import view
from ..plan import Obj, World

LOAD_FAILURES = {EXIT_MODEL_LOAD_FAILED: ServingReason.MODEL_LOAD_FAILED,
                 EXIT_MODEL_NOT_FOUND: ServingReason.MODEL_NOT_FOUND}
OOM_ADVICE = "a server ran out of memory: raise spec.resources.limits.memory"


Trouble = tuple[str, str]  # (reason, message)


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
