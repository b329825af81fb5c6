"""Step: what rank 0 reported this pass becomes `status.progress`, a bounded, downsampled
`status.history` (loss curves, one `step:value` string per metric, see kubeforge_api.curves) and
`status.lastCheckpoint`; an attempt that resumed from a checkpoint sets `status.resumedFrom` and
posts a `Resumed` Event, once. Recorded before success is decided, so the last numbers of a
finished job are kept. Pure helpers are shared with `kubeforge run`.

Fencing: a progress document is taken only from the current attempt (its `attempt` is the job's
`status.restartCount`); one that an older attempt served (an old rank 0 still answering on a lost
node's address, a poll that raced a restart) is ignored, so it never moves the progress, the curves or
`status.lastCheckpoint`."""

from __future__ import annotations

from kubeforge_api.constants import Reason
from kubeforge_api.contracts import HistoryPoint, ProgressDoc
from kubeforge_api.curves import MAX_CURVE_POINTS, CurvePoint, decode, encode
from kubeforge_api.trainingjob import CheckpointRef, Progress, ResumePoint

from ..plan import Event, Obj
from .context import Pass

HISTORY_LIMIT = MAX_CURVE_POINTS  # points per metric
CURVES = ("loss", "evalLoss", "accuracy", "perplexity", "samplesPerSecond")
HEADLINE_METRICS = ("accuracy", "perplexity", "evalLoss", "loss")


def summary(doc: ProgressDoc) -> Obj:
    """The fields of `status.progress` (rounded so unchanged progress writes nothing)."""
    return Progress(
        step=doc.step, total_steps=doc.total_steps, epoch=doc.epoch, percent=f"{doc.percent:.1f}%",
        loss=round(doc.loss, 6) if doc.loss is not None else None,
        eval={k: round(v, 6) for k, v in doc.eval.items()} if doc.eval else None,
        samples_per_second=round(doc.samples_per_second, 1) if doc.samples_per_second else None,
        eta_seconds=int(doc.eta_seconds) if doc.eta_seconds is not None else None,
    ).dump()


def downsample(points: list[CurvePoint], limit: int = HISTORY_LIMIT) -> list[CurvePoint]:
    """Halve the resolution until the curve fits `limit` points, always keeping the newest."""
    while len(points) > limit:
        points = points[::2] if len(points) % 2 else [*points[:-1:2], points[-1]]
    return points


def merge_history(old: Obj, points: list[HistoryPoint]) -> Obj:
    """Add new points to the per-metric curves {metric: "step:value ..."}; only known metrics, only
    steps after the last one kept, so the history stays bounded whatever a pod sends."""
    curves = {k: decode(v) for k, v in old.items() if k in CURVES}
    last = {k: (v[-1][0] if v else -1) for k, v in curves.items()}
    for point in points:
        values = point.dump()
        for metric in CURVES:
            if metric in values and point.step > last.get(metric, -1):
                curves.setdefault(metric, []).append((point.step, float(values[metric])))
                last[metric] = point.step
    return {k: encode(downsample(v)) for k, v in curves.items() if v}


def last_step(history: Obj) -> int:
    return max((curve[-1][0] for curve in map(decode, history.values()) if curve), default=-1)


def headline(evaluation: dict[str, float]) -> str | None:
    """The metric `kubectl get tj` shows: accuracy, else perplexity, else the evaluation loss."""
    name = next((k for k in HEADLINE_METRICS if k in evaluation), None)
    return f"{name} {evaluation[name]:.4g}" if name else None


def apply_progress(status: Obj, doc: ProgressDoc) -> None:
    status["progress"] = summary(doc)
    if (metric := headline(doc.eval)) is not None:
        status["metric"] = metric
    status["history"] = merge_history(status.get("history") or {}, doc.history)
    if doc.last_checkpoint_step is not None:
        status["lastCheckpoint"] = CheckpointRef(step=doc.last_checkpoint_step).dump()


def _resumed(p: Pass, doc: ProgressDoc) -> None:
    """The first report of an attempt that resumed from a checkpoint: `status.resumedFrom` and a `Resumed` Event."""
    if doc.resumed_from is None or doc.attempt != p.restarts:
        return
    point = ResumePoint(attempt=doc.attempt, step=doc.resumed_from).dump()
    if p.status.get("resumedFrom") != point:
        p.status["resumedFrom"] = point
        p.plan.events.append(Event("Normal", Reason.RESUMED, f"attempt {doc.attempt} resumed from the checkpoint "
                                                             f"at step {doc.resumed_from}"))


def from_current_attempt(p: Pass, doc: ProgressDoc) -> bool:
    """Whether `doc` comes from the attempt that runs now; the attempt number is the fencing token."""
    return doc.attempt == p.restarts


def record_progress(p: Pass) -> bool:
    if p.progress is not None and from_current_attempt(p, p.progress):
        apply_progress(p.status, p.progress)
        _resumed(p, p.progress)
    return False
