"""Small pure formatters shared by the view models: ages, durations, sizes, state badges."""

from __future__ import annotations

from datetime import UTC, datetime

from kubeforge_api.constants import State

# One colour per state (Streamlit badge colours) and a glyph for tables, where badges cannot go.
STATE_COLOR = {
    State.RUNNING: "blue", State.SUCCEEDED: "green", State.FAILED: "red", State.RESTARTING: "orange",
    State.PENDING: "gray", State.CREATED: "gray", State.SUSPENDED: "violet", State.INTERRUPTED: "orange",
    "Compressing": "blue", "Ready": "green", "Degraded": "orange", "NotReady": "red",
}
STATE_GLYPH = {"blue": "🔵", "green": "🟢", "red": "🔴", "orange": "🟠", "gray": "⚪", "violet": "🟣"}


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def duration(seconds: float | None) -> str:
    """`1d 2h`, `3h 4m`, `5m 6s`, `7s`; empty for None."""
    if seconds is None:
        return ""
    s = max(int(seconds), 0)
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s % 60}s"
    return f"{s}s"


def age_seconds(created: str | None, now: datetime) -> float | None:
    t = parse_time(created)
    return None if t is None else (now - t).total_seconds()


def size(n: int | None) -> str:
    """Bytes as `1.5 MiB`; empty for None."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def badge(state: str) -> str:
    """A state with its colour glyph, for tables."""
    return f"{STATE_GLYPH[STATE_COLOR.get(state, 'gray')]} {state}"


def color(state: str) -> str:
    return STATE_COLOR.get(state, "gray")


def number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"
