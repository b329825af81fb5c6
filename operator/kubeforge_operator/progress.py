"""Pure: training progress (as rank 0 reports it) -> `status.progress`, a bounded, downsampled
`status.history` for loss curves, `status.lastCheckpoint` and, at the end, `status.artifact`."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
HISTORY_LIMIT = 200  # points per metric
CURVES = ("loss", "evalLoss", "accuracy", "perplexity", "samplesPerSecond")


def summary(progress: Obj) -> Obj:
    """The fields of `status.progress` (camelCase, rounded so unchanged progress writes nothing)."""
    out: Obj = {"step": int(progress.get("step", 0)), "totalSteps": int(progress.get("total_steps", 0)),
                "epoch": int(progress.get("epoch", 0)), "percent": f"{float(progress.get('percent', 0.0)):.1f}%"}
    if progress.get("loss") is not None:
        out["loss"] = round(float(progress["loss"]), 6)
    if progress.get("eval"):
        out["eval"] = {k: round(float(v), 6) for k, v in progress["eval"].items()}
    if progress.get("samples_per_second"):
        out["samplesPerSecond"] = round(float(progress["samples_per_second"]), 1)
    if progress.get("eta_seconds") is not None:
        out["etaSeconds"] = int(progress["eta_seconds"])
    return out


def downsample(points: list[list[float]], limit: int = HISTORY_LIMIT) -> list[list[float]]:
    """Halve the resolution until the curve fits `limit` points, always keeping the newest."""
    while len(points) > limit:
        points = points[::2] if len(points) % 2 else [*points[:-1:2], points[-1]]
    return points


def merge_history(old: Obj, points: list[Obj]) -> Obj:
    """Add rank 0's new points ({"step", "loss", ...}) to the per-metric curves [[step, value], ...]."""
    out = {k: list(v) for k, v in old.items()}
    last = {k: (v[-1][0] if v else -1) for k, v in out.items()}
    for p in points:
        step = int(p.get("step", 0))
        for metric in CURVES:
            if metric in p and step > last.get(metric, -1):
                out.setdefault(metric, []).append([step, round(float(p[metric]), 6)])
                last[metric] = step
    return {k: downsample(v) for k, v in out.items()}


def last_step(history: Obj) -> int:
    return max((int(v[-1][0]) for v in history.values() if v), default=-1)
