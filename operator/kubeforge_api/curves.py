"""A metric curve as `status.history` holds it: one string of `step:value` pairs, oldest first
(`"10:2.303 20:1.971 30:1.52"`). `kubectl describe` prints every element of a list on a line of
its own (a 200-point curve was 200 lines); a string is one line. The operator writes curves with
`encode` and the dashboard reads them with `decode`, so the format has one definition."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BeforeValidator, StringConstraints

MAX_CURVE_POINTS = 100  # per curve; older points are thinned (see the operator's downsample)
MAX_CURVE_CHARS = 4096  # 100 points of at most 30 characters each, and room to spare
CURVE_PATTERN = r"^([0-9]+:[-+.0-9eE]+( [0-9]+:[-+.0-9eE]+)*)?$"

CurvePoint = tuple[int, float]


def encode(points: Iterable[CurvePoint]) -> str:
    """`step:value` pairs joined by spaces; values keep 4 significant digits (a chart's resolution)."""
    return " ".join(f"{int(step)}:{value:.4g}" for step, value in points)


def decode(curve: Any) -> list[CurvePoint]:
    """The points of a curve; also reads the older `[[step, value], ...]` form, and skips what is
    not a point (a hand-edited status), so a reader never fails on a curve."""
    pairs: Iterable[Any] = (p.split(":", 1) for p in curve.split()) if isinstance(curve, str) else (
        curve if isinstance(curve, list) else ())
    out: list[CurvePoint] = []
    for pair in pairs:
        try:
            step, value = pair
            out.append((int(float(step)), float(value)))
        except (TypeError, ValueError):
            continue
    return out


def _from_legacy(value: Any) -> Any:
    return encode(decode(value)) if isinstance(value, list) else value


Curve = Annotated[str, StringConstraints(max_length=MAX_CURVE_CHARS, pattern=CURVE_PATTERN),
                  BeforeValidator(_from_legacy)]
