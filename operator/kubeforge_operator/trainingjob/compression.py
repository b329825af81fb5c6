"""Step: after every worker succeeded, a job with `spec.compression` runs one compression pod on
the same storage. The job is `Compressing` until the pod ends; then `Compressed` says what came of
it (True with the method chosen, or False: AccuracyBudgetExceeded, NotFaster, NotSmaller,
MeasurementInvalid, CompressionFailed) and the job
succeeds either way, training results kept. A crashed compression pod is retried like a gang:
retryable exits up to backoffLimit counted failures, disruptions (eviction, preemption, deletion)
without counting, each retry after the same exponential back-off; a permanent failure is reported
at once."""

from __future__ import annotations

from datetime import timedelta

from kubeforge_api.compression import CompressionReason, CompressionTermination
from kubeforge_api.conditions import find
from kubeforge_api.constants import ConditionType, Reason, State
from kubeforge_api.exitcodes import FailureClass, classify
from kubeforge_api.trainingjob import CompressionStatus, LastFailure
from pydantic import ValidationError

from ..observe import PodView
from ..plan import parse_ts, ts
from ..render.trainingjob import pod_name, render_compression_pod
from .context import Pass
from .creation import backoff
from .failures import describe
from .success import record_rank0, workers_done


def _tries(p: Pass) -> CompressionStatus:
    """The stage's tries as the status counts them: pods started (the first is attempt 1), disruptions
    among their failures, and the last failure retried."""
    tries = CompressionStatus.model_validate(p.status.get("compression") or {})
    return CompressionStatus(attempts=tries.attempts or 1, disruptions=tries.disruptions,
                             last_failure=tries.last_failure)


def record(p: Pass, term: CompressionTermination) -> None:
    """`status.compression` (the summary, the published artifact's uri) and the Compressed condition."""
    tries = _tries(p)
    status = CompressionStatus.reported(term, p.storage_uri, tries.attempts or 1)
    p.status["compression"] = status.model_copy(update={"disruptions": tries.disruptions}).dump()
    p.set(ConditionType.COMPRESSED, term.compressed, term.reason, term.message)


def _record_failure(p: Pass, message: str) -> None:
    """A stage that produced no report: the status and the Compressed condition say why."""
    p.status["compression"] = _tries(p).model_copy(update={
        "compressed": False, "reason": CompressionReason.COMPRESSION_FAILED, "message": message}).dump()
    p.set(ConditionType.COMPRESSED, False, CompressionReason.COMPRESSION_FAILED, message)


def _failed(p: Pass, pod: PodView) -> bool:
    """A failed compression pod: retried while disrupted, or retryable under backoffLimit counted
    failures; else reported."""
    assert pod.failure is not None
    cls = classify(pod.failure.exit_code, pod.failure.reason, pod.disrupted)
    tries = _tries(p)
    attempts, disruptions = tries.attempts or 1, tries.disruptions or 0
    counted = attempts - disruptions
    if cls == FailureClass.DISRUPTION or (cls == FailureClass.RETRYABLE and counted <= p.policy.backoff_limit):
        failure = LastFailure.model_validate(pod.failure.dump()).model_copy(
            update={"time": pod.failure.time or ts(p.now)})
        p.status["compression"] = CompressionStatus(
            attempts=attempts + 1, disruptions=disruptions + (cls == FailureClass.DISRUPTION) or None,
            last_failure=failure).dump()
        p.delete([pod])
        p.status["state"] = State.COMPRESSING
        return True
    _record_failure(p, describe(pod.failure, cls))
    return False


def _backing_off(p: Pass) -> bool:
    """Whether the next compression pod must still wait out the back-off after the last failure."""
    tries = _tries(p)
    failed_at = tries.last_failure.time if tries.last_failure else None
    if not failed_at:
        return False
    counted = max((tries.attempts or 1) - 1 - (tries.disruptions or 0), 1)
    resume_at = parse_ts(failed_at) + timedelta(seconds=backoff(counted, p.cfg))
    if p.now >= resume_at:
        return False
    p.plan.requeue((resume_at - p.now).total_seconds())
    return True


def _finished(p: Pass, pod: PodView) -> bool:
    try:
        term = CompressionTermination.model_validate_json(pod.message)
    except (ValidationError, ValueError):
        _record_failure(p, f"pod {pod.name} ended without a readable compression report")
        return False
    record(p, term)
    return False


def compressing(p: Pass) -> bool:
    if p.spec.compression is None or find(p.conds, ConditionType.COMPRESSED) or not workers_done(p):
        return False
    record_rank0(p)
    pod = p.compressor
    if pod is not None and pod.phase == "Succeeded":
        return _finished(p, pod)
    if pod is not None and pod.failure is not None and not pod.deleting:
        return _failed(p, pod)
    attempt = _tries(p).attempts or 1
    name = pod_name(p.ref.name, "compress", 0)
    if pod is None and name not in p.expected and not _backing_off(p):
        p.plan.create.append(render_compression_pod(p.ref, p.spec, attempt, p.cfg.default_image, p.cfg.shm_size))
        p.status.setdefault("compression", CompressionStatus(attempts=attempt).dump())
    p.set(ConditionType.RUNNING, False, Reason.COMPRESSING, "training done; compressing the trained model")
    p.status["state"], p.status["reason"] = State.COMPRESSING, Reason.COMPRESSING
    return True
