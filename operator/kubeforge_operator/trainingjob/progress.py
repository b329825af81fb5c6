"""Step: what rank 0 reported this pass becomes `status.progress`, a bounded, downsampled
`status.history` (loss curves) and `status.lastCheckpoint`. Recorded before success is decided,
so the last numbers of a finished job are kept. Pure helpers are shared with `kubeforge run`."""

from __future__ import annotations

from kubeforge_api.contracts import HistoryPoint, ProgressDoc

from ..plan import Obj
from .context import Pass

HISTORY_LIMIT = 200  # points per metric
CURVES = ("loss", "evalLoss", "accuracy", "perplexity", "samplesPerSecond")
MAX_VALUE = 1e15


def summary(doc: ProgressDoc) -> Obj:
    """The fields of `status.progress` (rounded so unchanged progress writes nothing)."""
    out: Obj = {"step": doc.step, "totalSteps": doc.total_steps, "epoch": doc.epoch, "percent": f"{doc.percent:.1f}%"}
    if doc.loss is not None:
        out["loss"] = round(doc.loss, 6)
    if doc.eval:
        out["eval"] = {k: round(v, 6) for k, v in doc.eval.items()}
    if doc.samples_per_second:
        out["samplesPerSecond"] = round(doc.samples_per_second, 1)
    if doc.eta_seconds is not None:
        out["etaSeconds"] = int(doc.eta_seconds)
    return out


def downsample(points: list[list[float]], limit: int = HISTORY_LIMIT) -> list[list[float]]:
    """Halve the resolution until the curve fits `limit` points, always keeping the newest."""
    while len(points) > limit:
        points = points[::2] if len(points) % 2 else [*points[:-1:2], points[-1]]
    return points


def merge_history(old: Obj, points: list[HistoryPoint]) -> Obj:
    """Add new points to the per-metric curves {metric: [[step, value], ...]}; only known metrics,
    only steps after the last one kept, so the history stays bounded whatever a pod sends."""
    out = {k: list(v) for k, v in old.items() if k in CURVES and isinstance(v, list)}
    last = {k: (v[-1][0] if v else -1) for k, v in out.items()}
    for point in points:
        values = point.dump()
        for metric in CURVES:
            if metric in values and point.step > last.get(metric, -1):
                out.setdefault(metric, []).append([point.step, round(float(values[metric]), 6)])
                last[metric] = point.step
    return {k: downsample(v) for k, v in out.items()}


def last_step(history: Obj) -> int:
    return max((int(v[-1][0]) for v in history.values() if isinstance(v, list) and v), default=-1)


def apply_progress(status: Obj, doc: ProgressDoc) -> None:
    status["progress"] = summary(doc)
    status["history"] = merge_history(status.get("history") or {}, doc.history)
    if doc.last_checkpoint_step is not None:
        status["lastCheckpoint"] = {"step": doc.last_checkpoint_step}


def record_progress(p: Pass) -> bool:
    if p.progress is not None:
        apply_progress(p.status, p.progress)
    return False
