"""Pure: what a ServingJob's server pods and Deployments say about why a revision cannot serve: a
server that exited because its model cannot be found or loaded, or a storage initializer that
could not copy an s3:// model (not found, credentials refused, store unreachable, digest wrong;
named by the user's uri, not the container's mount), a pod that cannot be scheduled or started
(a missing credentials Secret named in one line) or ran out of memory, a Deployment that cannot
create its pods, or a child the API server refused."""

from __future__ import annotations

import re

from kubeforge_api.constants import LABEL_TRACK, Reason
from kubeforge_api.server_settings import EXIT_MODEL_LOAD_FAILED, EXIT_MODEL_NOT_FOUND, MODEL_MOUNT
from kubeforge_api.servingjob import ServingReason
from kubeforge_api.storage import (
    EXIT_ACCESS_DENIED,
    EXIT_CORRUPT,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    STORAGE_INITIALIZER_NAME,
)

from ..observe import view
from ..plan import Obj, World

LOAD_FAILURES = {EXIT_MODEL_LOAD_FAILED: ServingReason.MODEL_LOAD_FAILED,
                 EXIT_MODEL_NOT_FOUND: ServingReason.MODEL_NOT_FOUND}
# The storage initializer's exit codes (it copies an s3:// model into the pod before the server starts).
FETCH_FAILURES = {EXIT_NOT_FOUND: ServingReason.MODEL_NOT_FOUND,
                  EXIT_ACCESS_DENIED: ServingReason.STORAGE_ACCESS_DENIED,
                  EXIT_UNAVAILABLE: ServingReason.STORAGE_UNAVAILABLE,
                  EXIT_CORRUPT: ServingReason.MODEL_LOAD_FAILED}
MISSING_SECRET = re.compile(r'secret "([^"]+)" not found', re.IGNORECASE)
OOM_ADVICE = "a server ran out of memory: raise spec.resources.limits.memory"


Trouble = tuple[str, str]  # (reason, message)


def _terminations(pod: Obj, statuses: str = "containerStatuses", name: str | None = None) -> list[Obj]:
    """The terminated states (current and last) of a pod's containers (of `name` only, when given)."""
    return [t for cs in (pod.get("status") or {}).get(statuses) or [] if name is None or cs.get("name") == name
            for state in (cs.get("state") or {}, cs.get("lastState") or {}) if (t := state.get("terminated"))]


def _exits(pod: Obj) -> list[tuple[Obj, dict[int, ServingReason]]]:
    """The initializer's exits before the server's: each with the table that reads its code."""
    fetches = _terminations(pod, "initContainerStatuses", STORAGE_INITIALIZER_NAME)
    return [(t, FETCH_FAILURES) for t in fetches] + [(t, LOAD_FAILURES) for t in _terminations(pod)]


def load_failure(pods: list[Obj], uris: dict[str, str]) -> Trouble | None:
    """A server that exited because its model cannot be loaded, or a storage initializer that could not
    copy it: (reason, its one-line message), the container's mount replaced by the uri the user gave
    (`uris` by track)."""
    for pod in pods:
        uri = uris.get((pod["metadata"].get("labels") or {}).get(LABEL_TRACK, ""), "")
        for t, table in _exits(pod):
            if t.get("exitCode") in table:
                lines = (t.get("message") or "").strip().splitlines()
                line = lines[-1] if lines else "cannot load the model"
                return table[t["exitCode"]], f"pod {pod['metadata']['name']}: " + \
                    (line.replace(MODEL_MOUNT, uri) if uri else line)
    return None


def _named_secret(blocked: Trouble) -> Trouble:
    """A pod that cannot start because the model's credentials Secret is missing, said in one line."""
    missing = MISSING_SECRET.search(blocked[1])
    if blocked[0] != Reason.CONFIG_ERROR or missing is None:
        return blocked
    return blocked[0], f"{blocked[1].split(':', 1)[0]}: Secret {missing.group(1)} not found"


def pod_trouble(pods: list[Obj]) -> Trouble | None:
    """A server pod that cannot be scheduled or started, or that ran out of memory."""
    for pod in pods:
        if any(t.get("reason") == "OOMKilled" for t in _terminations(pod)):
            return Reason.OOM_KILLED, f"pod {pod['metadata']['name']}: {OOM_ADVICE}"
        blocked = view(pod).blocked
        if blocked is not None and blocked[0] != Reason.CONTAINER_CREATING:
            return _named_secret(blocked)
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
