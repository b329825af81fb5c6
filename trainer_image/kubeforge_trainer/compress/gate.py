"""The gate: what a measured candidate is worth, given what compression is for. Pure functions over
the typed numbers of `kubeforge_api.compression`, so every verdict can be checked without a model.

A candidate is accepted when its metric stays within the accuracy budget and it serves the
objective: `latency` wants it measurably faster at batch 1 (the median of the per-round speed-ups
at least `minSpeedup`, and their lower quartile above 1: a difference inside the spread of the
measurement is not a speed-up) with timings that were plausible; `size` wants smaller weights.
Anything else is rejected, and the note says why in words ("3.12x slower at batch 1"), never as a
speed-up below one."""

from __future__ import annotations

import math

from kubeforge_api.compression import (
    Candidate,
    CompressionReason,
    CompressionSpec,
    Latency,
    Rejection,
    Verdict,
    speed_phrase,
    times,
)

SPEED_REJECTIONS = (Rejection.NOT_FASTER, Rejection.NOT_MEASURABLY_FASTER, Rejection.BELOW_MIN_SPEEDUP)


def range_phrase(low: float, high: float) -> str:
    """The quartiles of a speed-up in words: '2.5-2.7x faster', '2.8-3.2x slower', '1.1x slower to 1.2x faster'."""
    if low > 1:
        return f"{times(low)}-{times(high)}x faster"
    if high < 1:
        return f"{times(1 / high)}-{times(1 / low)}x slower"
    return f"{times(1 / low) if low > 0 else 'inf'}x slower to {times(high)}x faster"


def speed_text(speedup: Latency, what: str = "") -> str:
    """'3.12x slower at batch 1 (quartiles 2.8-3.2x slower over the rounds)'; `what` leads when given
    ('decode 1.62x faster at batch 1 ...')."""
    text = f"{what + ' ' if what else ''}{speed_phrase(speedup.batch1)} at batch 1"
    s = speedup.batch1_spread
    return text + (f" (quartiles {range_phrase(s.low, s.high)})" if s else "")


def _rejection(c: Candidate, spec: CompressionSpec, timing_invalid: bool) -> tuple[Rejection | None, str]:
    """Why `c` fails the gate (None when it passes) and the words for it."""
    assert c.speedup is not None and c.drop is not None and c.size_ratio is not None
    budget = spec.accuracy_budget.max_drop
    if not c.drop <= budget + 1e-12:  # NaN (a diverged candidate) fails too
        return Rejection.ACCURACY, f"drop {c.drop:.4g} over the budget {budget:g}"
    if spec.objective == "size":
        return (None, "") if c.size_ratio > 1.0 else (Rejection.NOT_SMALLER, "weights not smaller")
    spread = c.speedup.batch1_spread
    low = spread.low if spread else c.speedup.batch1
    if timing_invalid:
        return Rejection.MEASUREMENT_INVALID, "timings implausible (batch 1 slower than batch 8) after re-measuring"
    if c.speedup.batch1 <= 1.0:
        return Rejection.NOT_FASTER, "not faster than the trained model"
    if low <= 1.0:
        return Rejection.NOT_MEASURABLY_FASTER, "not measurably faster (inside the spread of the measurement)"
    if c.speedup.batch1 < spec.min_speedup:
        return Rejection.BELOW_MIN_SPEEDUP, f"below minSpeedup {spec.min_speedup:g}"
    return None, ""


def judge(c: Candidate, spec: CompressionSpec, timing_invalid: bool = False, warning: str = "",
          what: str = "") -> Candidate:
    """`c` (measured) accepted or rejected, with a note that gives the numbers in words (`what` was
    timed: '' for a forward pass, 'decode' for a causal LM's generation step)."""
    if c.speedup is None or c.drop is None or c.size_ratio is None:
        return c
    rejection, why = _rejection(c, spec, timing_invalid)
    size = f"{times(c.size_ratio)}x smaller" if c.size_ratio > 1.0 else f"size {times(c.size_ratio)}x of the original"
    parts = [speed_text(c.speedup, what), size] if spec.objective == "latency" else [size, speed_text(c.speedup, what)]
    note = ", ".join(parts) + (f": {why}" if why else "") + (f"; {warning}" if warning else "")
    return c.model_copy(update={"verdict": Verdict.REJECTED if rejection else Verdict.ACCEPTED,
                                "rejection": rejection, "note": note[:512]})


def choose(spec: CompressionSpec, cands: list[Candidate]) -> int | None:
    """The published candidate: the first accepted, or the best one for the objective."""
    ok = [i for i, c in enumerate(cands) if c.verdict == Verdict.ACCEPTED]
    if not ok:
        return None
    if spec.select == "first":
        return ok[0]
    if spec.objective == "size":
        return max(ok, key=lambda i: cands[i].size_ratio or 0.0)
    return max(ok, key=lambda i: cands[i].speedup.batch1 if cands[i].speedup else 0.0)  # type: ignore[union-attr]


def outcome(cands: list[Candidate], chosen: int | None, metric: str) -> tuple[CompressionReason, str]:
    """The Compressed condition's reason and message."""
    if chosen is not None:
        c = cands[chosen]
        assert c.measured is not None and c.drop is not None
        value = c.measured.metric
        return CompressionReason.COMPRESSED, (
            f"{c.method}: {metric} {value:.4g} (drop {c.drop:.4g}), {c.note}" if math.isfinite(value) else
            f"{c.method}: {c.note}")[:1024]
    rejected = [c.rejection for c in cands if c.verdict == Verdict.REJECTED]
    if any(r in SPEED_REJECTIONS for r in rejected):
        reason = CompressionReason.NOT_FASTER
    elif Rejection.NOT_SMALLER in rejected:
        reason = CompressionReason.NOT_SMALLER
    elif Rejection.MEASUREMENT_INVALID in rejected:
        reason = CompressionReason.MEASUREMENT_INVALID
    elif rejected:
        reason = CompressionReason.ACCURACY_BUDGET_EXCEEDED
    else:
        errors = "; ".join(f"{c.method}: {c.error}" for c in cands if c.error)
        return CompressionReason.COMPRESSION_FAILED, f"every method failed ({errors})"[:1024]
    why = "; ".join(f"{c.method}: {c.note}" for c in cands if c.verdict == Verdict.REJECTED)
    return reason, f"nothing published, the trained model stays the artifact ({why})"[:1024]
