"""The compression report as a baseline-vs-candidate comparison with the verdict.

`status.compression` is not typed in the API yet, so this reads the dict defensively: it accepts
the full report (`baseline` and `candidates[]` with `measured` metric, sizeBytes, latencyMs,
`drop`, `speedup`, `verdict`, `chosen` index, published `artifact`) and the trimmed summary of a
termination message the operator copies into the status (`compressed`, `baselineMetric`,
candidates with flat metric/sizeBytes/latencyMs, `chosen` method name, `artifact.uri`), and
`{"attempts": N}` while the compression pod runs. A value of the wrong type becomes empty, never an exception."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..format import number, size

VERDICT_GLYPH = {"accepted": "✅ accepted", "rejected": "❌ rejected", "failed": "⚠️ failed", "skipped": "⏭ skipped",
                 "baseline": "baseline"}


@dataclass(frozen=True)
class ReportRow:
    method: str
    metric: str
    drop: str
    size: str
    latency_ms: str  # batch 1
    speedup: str  # batch 1, x baseline
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


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _f(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _i(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _latency(measured: dict[str, Any]) -> float | None:
    lat = measured.get("latencyMs")
    return _f(_d(lat).get("batch1")) if isinstance(lat, dict) else _f(lat)


def _row(c: dict[str, Any], base_latency: float | None) -> ReportRow:
    m = _d(c.get("measured")) or c
    lat = _latency(m)
    speed = _f(_d(c.get("speedup")).get("batch1")) if isinstance(c.get("speedup"), dict) else _f(c.get("speedup"))
    if speed is None and lat and base_latency:
        speed = base_latency / lat
    drop = _f(c.get("drop"))
    verdict = str(c.get("verdict", ""))
    return ReportRow(method=str(c.get("method", "?")), metric=number(_f(m.get("metric"))),
                     drop="" if drop is None else f"{drop:+.4g}", size=size(_i(m.get("sizeBytes"))),
                     latency_ms=number(lat, 3), speedup="" if speed is None else f"{speed:.2f}x",
                     verdict=VERDICT_GLYPH.get(verdict, verdict), note=str(c.get("error") or "")[:200])


def _budget(report: dict[str, Any]) -> str:
    b = _d(report.get("budget"))
    if "maxDrop" not in b:
        return ""
    return f"max drop {b['maxDrop']}" + (" (relative)" if b.get("relative") else "")


def _chosen(report: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    chosen = report.get("chosen")
    if isinstance(chosen, int) and not isinstance(chosen, bool) and 0 <= chosen < len(candidates):
        return candidates[chosen]
    if isinstance(chosen, str):
        return next((c for c in candidates if c.get("method") == chosen), {"method": chosen})
    return None


def compression_view(report: dict[str, Any] | None) -> CompressionView | None:
    """None when the job has no compression result."""
    if not report:
        return None
    if set(report) <= {"attempts"}:  # the compression pod has not reported yet
        return CompressionView(metric="", budget="", rows=[], compressed=False,
                               verdict=f"Compression running (attempt {report.get('attempts', 1)})")
    candidates = [c for c in report.get("candidates", []) if isinstance(c, dict)] \
        if isinstance(report.get("candidates"), list) else []
    base = _d(report.get("baseline"))
    base_metric = _f(base.get("metric")) if base else _f(report.get("baselineMetric"))
    base_latency = _latency(base)
    rows = [ReportRow("baseline (trained model)", number(base_metric), "", size(_i(base.get("sizeBytes"))),
                      number(base_latency, 3), "1.00x" if base_latency else "", "baseline")]
    rows += [_row(c, base_latency) for c in candidates]
    chosen = _chosen(report, candidates)
    reason, message = str(report.get("reason", "")), str(report.get("message", ""))
    compressed = chosen is not None and report.get("compressed", True) is not False
    if compressed and chosen is not None:
        verdict = f"Compressed: {chosen.get('method', '?')} published"
    else:
        verdict = f"Not compressed ({reason or 'no candidate accepted'}): the original model stays the artifact"
    if message:
        verdict += f". {message}"
    art = _d(report.get("artifact"))
    fields = (("URI", str(art.get("uri", ""))), ("Path", str(art.get("path", ""))),
              ("Digest", str(art.get("digest", ""))), ("Size", size(_i(art.get("sizeBytes")))))
    artifact = [(k, v) for k, v in fields if v]
    return CompressionView(metric=str(report.get("metric", "metric")), budget=_budget(report), rows=rows,
                           verdict=verdict, compressed=compressed, artifact=artifact)
