"""Step: after training (and compression, when asked for) a job with `spec.output` runs one publish
pod that copies the artifacts from its claim to the object store. The job is `Publishing` until the
pod ends; then `Published` says where the copies are (`status.artifact.publishedUri`, and the
compressed artifact's) or why there are none, and the job succeeds either way, its artifacts kept
on the claim. A disrupted publish pod is recreated; any other failure is reported in one line."""

from __future__ import annotations

from kubeforge_api.conditions import find
from kubeforge_api.constants import ROLE_PUBLISH, ConditionType, Reason, State
from kubeforge_api.contracts import PublishResult
from kubeforge_api.exitcodes import FailureClass, classify
from pydantic import ValidationError

from ..observe import PodView
from ..render.trainingjob import pod_name, render_publish_pod
from .context import Pass
from .failures import describe
from .success import record_rank0, workers_done


def _ready_to_publish(p: Pass) -> bool:
    """Training succeeded and compression, if any, has reported."""
    return workers_done(p) and (p.spec.compression is None or find(p.conds, ConditionType.COMPRESSED) is not None)


def _compressed_path(p: Pass) -> str | None:
    """The published compressed artifact, relative to the job's storage."""
    uri = str(((p.status.get("compression") or {}).get("artifact") or {}).get("uri", ""))
    base = p.storage_uri + "/"
    return uri.removeprefix(base) if uri.startswith(base) else None


def _record(p: Pass, pod: PodView) -> None:
    try:
        result = PublishResult.model_validate_json(pod.message)
    except (ValidationError, ValueError):
        p.set(ConditionType.PUBLISHED, False, Reason.PUBLISH_FAILED,
              f"pod {pod.name} ended without saying where it published")
        return
    if result.artifact is not None and p.status.get("artifact"):
        p.status["artifact"] = {**p.status["artifact"], "publishedUri": result.artifact}
    compressed = (p.status.get("compression") or {}).get("artifact")
    if result.compressed is not None and compressed:
        p.status["compression"]["artifact"] = {**compressed, "publishedUri": result.compressed}
    p.set(ConditionType.PUBLISHED, True, Reason.PUBLISHED, f"artifacts copied to {result.artifact}")


def publishing(p: Pass) -> bool:
    if p.spec.output is None or find(p.conds, ConditionType.PUBLISHED) or not _ready_to_publish(p):
        return False
    record_rank0(p)
    pod = p.publisher
    if pod is not None and pod.phase == "Succeeded":
        _record(p, pod)
        return False
    if pod is not None and pod.blocked is not None and pod.blocked[0] == Reason.CONFIG_ERROR and not pod.deleting:
        p.set(ConditionType.PUBLISHED, False, Reason.PUBLISH_FAILED, f"pod {pod.name}: {pod.blocked[1]}")
        p.delete([pod])  # a missing Secret would hold it Pending forever
        return False
    if pod is not None and pod.failure is not None and not pod.deleting:
        cls = classify(pod.failure.exit_code, pod.failure.reason, pod.disrupted)
        if cls != FailureClass.DISRUPTION:
            p.set(ConditionType.PUBLISHED, False, Reason.PUBLISH_FAILED, describe(pod.failure, cls))
            return False
        p.delete([pod])
    elif pod is None and pod_name(p.ref.name, ROLE_PUBLISH, 0) not in p.expected:
        p.plan.create.append(render_publish_pod(p.ref, p.spec, p.restarts, p.cfg.default_image, p.cfg.shm_size,
                                                _compressed_path(p)))
    p.set(ConditionType.RUNNING, False, Reason.PUBLISHING, f"copying the artifacts to {p.spec.output.uri}")
    p.status["state"], p.status["reason"] = State.PUBLISHING, Reason.PUBLISHING
    return True
