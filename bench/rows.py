"""The one row model of docs/benchmarks.md, shared by every section.

A row is one comparison of one benchmark: what is compared, the baseline, our value, their ratio
(each with its spread where the benchmark measured one), and the goal. Goals are declared beside each
benchmark (`bench/<area>/goals.py`, as a `Section`); whether a row meets its goal is computed here,
from the measured values, never typed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Obj = dict[str, Any]
Op = Literal[">=", "<=", ">", "<", "="]

_HOLDS: dict[Op, Callable[[float, float], bool]] = {
    ">=": lambda v, limit: v >= limit, "<=": lambda v, limit: v <= limit,
    ">": lambda v, limit: v > limit, "<": lambda v, limit: v < limit, "=": lambda v, limit: v == limit}


@dataclass(frozen=True)
class Bound:
    """One condition of a goal: the measured median `op` `limit`; `unit` only shapes the text."""

    op: Op
    limit: float
    unit: str = ""

    def holds(self, value: float) -> bool:
        return _HOLDS[self.op](value, self.limit)

    def __str__(self) -> str:
        return f"{self.op} {self.limit}{self.unit}"


@dataclass(frozen=True)
class Goal:
    """What a row must reach: a bound on our value, on the ratio to the baseline, or on both (all must
    hold); `text` says what the bounds cannot (e.g. 'none per job')."""

    ours: Bound | None = None
    ratio: Bound | None = None
    text: str = ""

    def __str__(self) -> str:
        bounds = " and ".join(str(b) for b in (self.ours, self.ratio) if b is not None)
        return f"{bounds} ({self.text})" if bounds and self.text else bounds or self.text


@dataclass(frozen=True)
class Value:
    """A measured number: its median, with min-max and rounds where the benchmark recorded them;
    `label` and `detail` frame it in the table (e.g. 'p50' ... ', p99 90 ms')."""

    median: float
    low: float | None = None
    high: float | None = None
    rounds: int | None = None
    digits: int = 3
    unit: str = ""
    label: str = ""
    detail: str = ""

    def spread(self) -> str:
        """' (min-max, n=rounds)', or the part of it that is known."""
        d = self.digits
        parts = [] if self.low is None or self.high is None else [f"{self.low:.{d}f}-{self.high:.{d}f}"]
        parts += [] if self.rounds is None else [f"n={self.rounds}"]
        return f" ({', '.join(parts)})" if parts else ""

    def __str__(self) -> str:
        label = f"{self.label} " if self.label else ""
        return f"{label}{self.median:.{self.digits}f}{self.unit}{self.spread()}{self.detail}"


def ratio(part: Obj, digits: int = 3, unit: str = "") -> Value:
    """A ratio as the benchmarks record it: ratio_median, ratio_min, ratio_max, rounds."""
    return Value(part["ratio_median"], part.get("ratio_min"), part.get("ratio_max"), part.get("rounds"),
                 digits, unit)


def stats(part: Obj, digits: int = 3, unit: str = "", label: str = "", detail: str = "") -> Value:
    """A measured value as the benchmarks record it: median, min, max and (where kept) rounds."""
    return Value(part["median"], part.get("min"), part.get("max"), part.get("rounds"), digits, unit, label, detail)


def unmeasured(part: object, key: str) -> str:
    """Why a part of the results has no `key` ('' when it has one): the first line of the error it
    recorded, or 'no result'."""
    if isinstance(part, dict) and key in part:
        return ""
    if isinstance(part, dict) and "error" in part:
        return str(part["error"]).splitlines()[0][:160]
    return "no result"


Cell = Value | str | None


@dataclass(frozen=True)
class Row:
    """One comparison of one benchmark, with the same columns in every section. A row without a goal
    is context; a row with `missing` set was not measured (it says why)."""

    benchmark: str
    what: str
    baseline: Cell = None
    ours: Cell = None
    ratio: Value | None = None
    goal: Goal | None = None
    missing: str = ""

    def __post_init__(self) -> None:
        if self.goal is None or self.missing:
            return
        if self.goal.ours is not None and not isinstance(self.ours, Value):
            raise TypeError(f"{self.what!r}: its goal bounds our value, which is not a measured Value")
        if self.goal.ratio is not None and self.ratio is None:
            raise TypeError(f"{self.what!r}: its goal bounds the ratio, which was not given")

    @property
    def met(self) -> bool | None:
        """Whether every bound of the goal holds; None for context rows and rows not measured."""
        if self.goal is None or self.missing:
            return None
        checks = [(self.goal.ours, self.ours), (self.goal.ratio, self.ratio)]
        return all(b.holds(v.median) for b, v in checks if b is not None and isinstance(v, Value))

    @property
    def verdict(self) -> str:
        if self.missing:
            return "**not measured**"
        return {None: "-", True: "met", False: "**not met**"}[self.met]

    def cells(self) -> list[str]:
        """what | baseline | ours | ratio | goal | verdict, each safe inside a Markdown table."""
        ours = f"not measured ({self.missing})" if self.missing else _text(self.ours)
        goal = "context" if self.goal is None else str(self.goal)
        cells = [self.what, _text(self.baseline), ours, _text(self.ratio), goal, self.verdict]
        return [c.replace("|", "\\|").replace("\n", " ") for c in cells]


def _text(cell: Cell) -> str:
    return "-" if cell is None else str(cell)


def _no_facts(results: Obj) -> list[str]:
    return []


@dataclass(frozen=True)
class Section:
    """One benchmark as docs/benchmarks.md shows it: its results file (bench/results/<key>.json), its
    goals, how its results read as rows, what the header line says besides machine and date, and how
    to measure it. Its prose, included verbatim, is `notes` (a path under bench/), by default
    bench/<key>/NOTES.md."""

    key: str
    title: str
    goals: Mapping[str, Goal]
    rows: Callable[[Obj], list[Row]]
    facts: Callable[[Obj], list[str]] = _no_facts
    run: str = "make bench"
    missing: str = ""
    notes: str = ""

    @property
    def notes_file(self) -> str:
        """Its prose file, relative to bench/."""
        return self.notes or f"{self.key}/NOTES.md"
