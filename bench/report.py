"""Write docs/benchmarks.md from bench/results/*.json.

Every section has one shape: a header line (machine, what else the benchmark records about its run,
when it was measured), one table of `Row`s (bench/rows.py) whose goals and readings are declared beside
each benchmark (bench/<area>/goals*.py), and the benchmark's prose (bench/<area>/NOTES*.md), included
verbatim. The page opens with bench/NOTES.md and a count of the goals each benchmark meets. Numbers come
from the results files (and, quoted in prose, from the NOTES), never from this file."""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: the bench.* modules resolve from the repository root

from bench.cluster.goals import SECTION as NODE_LOSS  # noqa: E402
from bench.compress.goals import SECTION as COMPRESS  # noqa: E402
from bench.compress.goals_hf_int8 import SECTION as HF_INT8  # noqa: E402
from bench.compress.goals_llm_int8 import SECTION as LLM_INT8  # noqa: E402
from bench.dashboard.goals import SECTION as DASHBOARD  # noqa: E402
from bench.gpu.goals import SECTION as GPU  # noqa: E402
from bench.kueue.goals import SECTION as KUEUE  # noqa: E402
from bench.operator.goals import SECTION as OPERATOR  # noqa: E402
from bench.rows import Obj, Row, Section  # noqa: E402
from bench.serve.goals import SECTION as SERVE  # noqa: E402
from bench.serve.goals_llm import SECTION as LLM  # noqa: E402
from bench.serve.goals_serve_hf import SECTION as SERVE_HF  # noqa: E402
from bench.serve.goals_storage import SECTION as STORAGE  # noqa: E402
from bench.train.goals import SECTION as TRAIN  # noqa: E402
from bench.train.goals_elastic import SECTION as ELASTIC  # noqa: E402
from bench.train.goals_finetune import SECTION as FINETUNE  # noqa: E402

SECTIONS = (OPERATOR, NODE_LOSS, ELASTIC, KUEUE, TRAIN, FINETUNE, SERVE, SERVE_HF, LLM, STORAGE, COMPRESS, HF_INT8,
            LLM_INT8, DASHBOARD, GPU)
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
COLUMNS = ("what", "baseline", "ours", "ratio (median, min-max, n)", "goal", "verdict")
VERDICTS = ("met", "**not met**", "**not measured**", "-")


@dataclass(frozen=True)
class Measured:
    """A section with its results read: its rows, or why they could not be read (`error`)."""

    section: Section
    path: Path
    results: Obj | None
    rows: tuple[Row, ...] = ()
    error: str = ""


def measure(section: Section, results: Path = RESULTS) -> Measured:
    """Read a section's results file into rows; a file that is missing or incomplete loses only its section."""
    path = results / f"{section.key}.json"
    if not path.exists():
        return Measured(section, path, None)
    data = dict(json.loads(path.read_text()))
    try:
        return Measured(section, path, data, tuple(section.rows(data)))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        return Measured(section, path, data, error=repr(e))


def when(results: Obj, path: Path) -> str:
    """When the results were measured: the date the file records, else the dates its parts record
    (naming the parts saved before parts had dates), else the file's time."""
    if "date" in results:
        return str(results["date"])
    parts = {k: v for k, v in results.items() if isinstance(v, dict)}
    dated = sorted({str(v["date"]) for v in parts.values() if "date" in v})
    if not dated:
        return f"{datetime.fromtimestamp(path.stat().st_mtime, UTC):%Y-%m-%d}"
    undated = [k for k, v in parts.items() if "date" not in v]
    return ", ".join(dated) + (f" (undated parts: {', '.join(undated)}, from an earlier run)" if undated else "")


def header(m: Measured) -> str:
    assert m.results is not None
    machine = [f"Machine: {m.results['machine']}"] if "machine" in m.results else []
    return "; ".join([*machine, *m.section.facts(m.results), f"measured {when(m.results, m.path)}"]) + "."


def table(rows: tuple[Row, ...]) -> list[str]:
    lines = [f"| {' | '.join(COLUMNS)} |", f"|{' --- |' * len(COLUMNS)}"]
    return lines + [f"| {' | '.join(row.cells())} |" for row in rows]


def notes(name: str, bench: Path = BENCH) -> list[str]:
    """A prose file under bench/ verbatim (a section's `notes_file`), when it exists."""
    path = bench / name
    return [path.read_text().strip(), ""] if path.exists() else []


def section_lines(m: Measured, bench: Path = BENCH) -> list[str]:
    s = m.section
    lines = [f"## {s.title}", ""]
    if m.results is None:
        lines += [f"Not measured yet{f' ({s.missing})' if s.missing else ''}: run `{s.run}`.", ""]
    elif m.error:
        lines += [f"Results incomplete ({m.error}); rerun `{s.run}`.", ""]
    else:
        lines += [header(m), "", *table(m.rows), ""]
    return lines + notes(s.notes_file, bench)


def summary(measured: list[Measured]) -> list[str]:
    """How many goals each benchmark meets, and which rows miss theirs."""
    lines = ["## Goals at a glance", "", "| benchmark | met | not met | not measured | context rows |",
             "| --- | --- | --- | --- | --- |"]
    for m in measured:
        n = Counter(row.verdict for row in m.rows)
        counts = [str(n[v]) if m.rows else "-" for v in VERDICTS]
        lines.append(f"| {m.section.title} | {' | '.join(counts)} |")
    missed = [f"- {m.section.title}: {row.what}" for m in measured for row in m.rows if row.met is False]
    return [*lines, "", *(["Not met:", "", *missed, ""] if missed else [])]


def render(results: Path = RESULTS, bench: Path = BENCH) -> str:
    measured = [measure(s, results) for s in SECTIONS]
    lines = ["# Benchmarks", "", *notes("NOTES.md", bench), *summary(measured)]  # it opens the page
    for m in measured:
        lines += section_lines(m, bench)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    (REPO / "docs" / "benchmarks.md").write_text(render())


if __name__ == "__main__":
    main()
