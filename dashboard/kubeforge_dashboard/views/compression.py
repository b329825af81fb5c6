"""The compression report as a baseline-vs-candidate comparison with the verdict, from the typed
`status.compression` (attempts while the compression pod runs, then the summary it reported)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubeforge_api.compression import AccuracyBudget, CandidateSummary, Latency, Summary, speed_phrase
from kubeforge_api.trainingjob import CompressionStatus

from ..format import number, size

VERDICT_GLYPH = {"accepted": "✅ accepted", "rejected": "❌ rejected", "failed": "⚠️ failed", "skipped": "⏭ skipped"}


@dataclass(frozen=True)
class ReportRow:
    method: str
    metric: str
    drop: str
    size: str
    latency_ms: str  # batch 1
    speedup: str  # batch 1 against the baseline, in words: "2.15x faster", "3.12x slower"
    verdict: str
    note: str = ""


@dataclass(frozen=True)
class CompressionView:
    metric: str
    budget: str
    rows: list[ReportRow]
    verdict: str  # one line
    compressed: bool
    artifact: list[tuple[str, str]] = field(default_factory=list)


def _batch1(latency: Latency | None) -> float | None:
    return latency.batch1 if latency else None


def _speedup(c: CandidateSummary, baseline: float | None) -> str:
    """Batch-1 speed-up as reported, else from the two latencies."""
    lat = _batch1(c.latency_ms)
    speed = _batch1(c.speedup) or (baseline / lat if baseline and lat else None)
    return "" if speed is None else speed_phrase(speed)  # "3.12x slower", never "0.32x"


def _row(c: CandidateSummary, baseline: float | None) -> ReportRow:
    settings = ", ".join(f"{k}={v}" for k, v in c.parameters.items())
    return ReportRow(method=c.method, metric=number(c.metric), drop="" if c.drop is None else f"{c.drop:+.4g}",
                     size=size(c.size_bytes), latency_ms=number(_batch1(c.latency_ms), 3),
                     speedup=_speedup(c, baseline), verdict=VERDICT_GLYPH.get(c.verdict, c.verdict), note=settings)


def _baseline_row(base: Summary) -> ReportRow:
    lat = _batch1(base.latency_ms)
    return ReportRow("baseline (trained model)", number(base.metric), "", size(base.size_bytes), number(lat, 3),
                     speed_phrase(1.0) if lat else "", "baseline")


def _budget(budget: AccuracyBudget | None) -> str:
    if budget is None:
        return ""
    return f"max drop {budget.max_drop:g}" + (" (relative)" if budget.relative else "")


def _verdict(s: CompressionStatus) -> str:
    if s.compressed:
        line = f"Compressed: {s.chosen or '?'} published"
    else:
        line = f"Not compressed ({s.reason or 'no candidate accepted'}): the original model stays the artifact"
    return f"{line}. {s.message}" if s.message else line


def compression_view(status: CompressionStatus | None) -> CompressionView | None:
    """None when the job has no compression stage yet."""
    if status is None:
        return None
    if status.reason is None:  # the compression pod has not reported yet
        return CompressionView(metric="", budget="", rows=[], compressed=False,
                               verdict=f"Compression running (attempt {status.attempts or 1})")
    base = status.baseline or Summary()
    rows = [_baseline_row(base), *(_row(c, _batch1(base.latency_ms)) for c in status.candidates or [])]
    art = status.artifact
    fields = (("URI", art.uri), ("Digest", art.digest), ("Size", size(art.size_bytes))) if art else ()
    return CompressionView(metric=status.metric or "metric", budget=_budget(status.budget), rows=rows,
                           verdict=_verdict(status), compressed=bool(status.compressed),
                           artifact=[(k, v) for k, v in fields if v])
