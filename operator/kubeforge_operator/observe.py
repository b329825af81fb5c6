"""Pure: a TrainingJob's pods (raw API dicts) -> what they say, in the terms the status logic
needs (which attempt, running or not, the first failure and why, why a pod is not running)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeforge_api.constants import LABEL_ATTEMPT, LABEL_RANK, LABEL_ROLE, Reason
from kubeforge_api.contracts import TrainingResult, parse_result
from kubeforge_api.model import TERMINATION_LIMIT
from kubeforge_api.trainingjob import LastFailure

from .causes import cause

Obj = dict[str, Any]
WAITING = "waiting for the pods to start"
WAITING_REASONS = {
    "ImagePullBackOff": Reason.IMAGE_PULL_BACKOFF, "ErrImagePull": Reason.IMAGE_PULL_BACKOFF,
    "InvalidImageName": Reason.IMAGE_PULL_BACKOFF, "CrashLoopBackOff": Reason.CRASH_LOOP_BACKOFF,
    "CreateContainerConfigError": Reason.CONFIG_ERROR, "CreateContainerError": Reason.CONFIG_ERROR,
}


@dataclass(frozen=True)
class Failure:
    pod: str
    container: str
    exit_code: int
    reason: str
    message: str
    time: str
    cause: str = ""  # the line of the full termination text that says why (see causes.py)

    def dump(self) -> Obj:
        """`status.lastFailure`."""
        return LastFailure(pod=self.pod, container=self.container, exit_code=self.exit_code, reason=self.reason,
                           message=self.message, time=self.time).dump()


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    role: str
    rank: int
    attempt: int
    phase: str
    created: str
    deleting: bool
    disrupted: bool
    failure: Failure | None
    blocked: tuple[str, str] | None  # (reason, message) why the pod is not running yet
    ip: str = ""
    message: str = ""  # the termination message of a container that exited 0 (at most 4 KiB)
    node: str = ""  # the node the pod is bound to ("" until scheduled)

    @property
    def result(self) -> TrainingResult | None:
        """Rank 0's typed training result (artifact, progress), if its message is one."""
        return parse_result(self.message)

    @property
    def running(self) -> bool:
        return self.phase == "Running" and not self.deleting

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def _failure(pod: Obj) -> Failure | None:
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    terminated = []
    for cs in status.get("containerStatuses") or []:
        t = (cs.get("state") or {}).get("terminated")
        if t and t.get("exitCode", 0) != 0:
            terminated.append((t.get("finishedAt") or "", cs["name"], t))
    if terminated:
        finished, container, t = min(terminated, key=lambda x: x[0])
        message = (t.get("message") or "").strip()
        return Failure(name, container, int(t["exitCode"]), t.get("reason") or "Error", message[-512:], finished,
                       cause(message))
    if status.get("phase") == "Failed":  # e.g. evicted before any container ran
        return Failure(name, "", 0, status.get("reason") or "PodFailed",
                       (status.get("message") or "")[-512:], "")
    return None


def _blocked(pod: Obj) -> tuple[str, str] | None:
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return Reason.UNSCHEDULABLE, f"pod {name}: {c.get('message', '')}"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in WAITING_REASONS:
            return WAITING_REASONS[waiting["reason"]], f"pod {name}: {waiting.get('message', waiting['reason'])}"
    if status.get("phase", "Pending") == "Pending":  # one message for all: pods starting is no news
        return Reason.CONTAINER_CREATING, WAITING
    return None


def view(pod: Obj) -> PodView:
    meta = pod["metadata"]
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    disrupted = any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
    return PodView(
        name=meta["name"], uid=meta.get("uid", ""), role=labels.get(LABEL_ROLE, ""),
        rank=int(labels.get(LABEL_RANK, 0)), attempt=int(labels.get(LABEL_ATTEMPT, 0)),
        phase=status.get("phase", "Pending"), created=meta.get("creationTimestamp", ""),
        deleting=bool(meta.get("deletionTimestamp")), disrupted=disrupted, failure=_failure(pod),
        blocked=_blocked(pod), ip=status.get("podIP", ""), message=_success_message(pod),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
    )


def _success_message(pod: Obj) -> str:
    """The termination message of a container that exited 0, bounded as the kubelet bounds it."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        t = (cs.get("state") or {}).get("terminated") or {}
        if t.get("exitCode") == 0 and isinstance(t.get("message"), str):
            return str(t["message"])[:TERMINATION_LIMIT]
    return ""
