"""The benchmarks page (bench/report.py): one row model in every section, goals declared beside each
benchmark and judged against the results (never typed as verdicts), each benchmark's NOTES.md included
verbatim, and `make bench` never losing finished results: a results file that is missing or incomplete
loses only its own section, and a trainer part that failed shows as not measured."""

from __future__ import annotations

import ast
import copy
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # the bench.* modules resolve from the repository root

from bench import report  # noqa: E402
from bench.operator.goals import SECTION as OPERATOR  # noqa: E402
from bench.rows import Bound, Goal, Row, Value  # noqa: E402
from bench.serve.goals_serve_hf import SECTION as SERVE_HF  # noqa: E402
from bench.serve.goals_storage import SECTION as STORAGE  # noqa: E402
from bench.train.goals import SECTION as TRAIN  # noqa: E402

RESULTS = REPO / "bench" / "results"
JOBS_GOAL = Goal(ours=Bound(">=", 10, " jobs/s"), ratio=Bound(">=", 0.8, "x"))


def jobs_row(jobs_per_s: float, ratio: float) -> Row:
    return Row("operator", "jobs/s", ours=Value(jobs_per_s), ratio=Value(ratio), goal=JOBS_GOAL)


def test_a_goal_is_met_only_when_every_bound_holds() -> None:
    assert jobs_row(37.8, 0.85).met is True
    assert jobs_row(37.8, 0.75).met is False  # the ratio misses
    assert jobs_row(9.0, 0.85).met is False  # our value misses
    assert jobs_row(37.8, 0.75).verdict == "**not met**"
    assert jobs_row(10, 0.8).cells()[4:] == [">= 10 jobs/s and >= 0.8x", "met"]  # bounds are inclusive
    assert Row("x", "p50", ours=Value(101), goal=Goal(ours=Bound("<=", 100, " ms"))).met is False
    assert Row("x", "writes", ours=Value(0), goal=Goal(ours=Bound("=", 0))).met is True


def test_context_rows_and_rows_not_measured() -> None:
    context = Row("x", "absolute req/s", ours=Value(358, 58, 500, 5, digits=0, unit=" req/s"))
    assert context.met is None
    assert context.cells() == ["absolute req/s", "-", "358 req/s (58-500, n=5)", "-", "context", "-"]
    failed = Row("x", "fsdp", goal=Goal(ratio=Bound(">=", 0.85)), missing="RuntimeError: rank 1 | died")
    assert failed.met is None
    assert failed.cells()[2] == "not measured (RuntimeError: rank 1 \\| died)"  # a bare '|' would split the row
    assert failed.verdict == "**not measured**"


def test_a_goal_must_bound_a_measured_value() -> None:
    with pytest.raises(TypeError, match="not a measured Value"):
        Row("x", "writes", ours="5 writes", goal=Goal(ours=Bound("<=", 6)))
    with pytest.raises(TypeError, match="bounds the ratio"):
        Row("x", "speed-up", ours=Value(2.0), goal=Goal(ratio=Bound(">=", 2.5)))


def test_trainer_rows_keep_finished_parts_and_mark_failed_ones() -> None:
    done = {"ratio_median": 0.98, "ratio_min": 0.9, "ratio_max": 1.1, "rounds": 5, "losses_equal_1e-5": True}
    rows = TRAIN.rows({"machine": "m", "trainer_vs_loop_1ms": done,
                       "fsdp_vs_ddp": {"error": "RuntimeError: rank 1 | died\ntrace", "date": "d"}})
    first = rows[0].cells()
    assert first[2:] == ["losses equal to 1e-5: yes", "0.980 (0.900-1.100, n=5)", ">= 0.97", "met"]
    fsdp = next(row for row in rows if row.what.startswith("our FSDP"))
    assert fsdp.missing == "RuntimeError: rank 1 | died"  # the error's first line
    assert [row.verdict for row in rows].count("**not measured**") == 5  # 1 ms concurrent, 10 ms, DDP, FSDP, MFU


def test_verdicts_follow_the_results_not_the_code() -> None:
    results = json.loads((RESULTS / "operator.json").read_text())
    jobs = results["jobs_per_s"]
    assert OPERATOR.rows(results)[0].met is (jobs["operator_median"] >= 10 and jobs["ratio_median"] >= 0.8)
    jobs |= {"operator_median": 12.0, "ratio_median": 0.9}
    assert OPERATOR.rows(results)[0].met is True
    jobs["ratio_median"] = 0.7
    assert OPERATOR.rows(results)[0].met is False


def test_hf_serving_goals_bound_throughput_and_p99_at_32_clients_the_rest_is_context() -> None:
    results = json.loads((RESULTS / "serve_hf.json").read_text())
    throughput, p99 = results["throughput_c32_vs_kserve"], results["p99_c32_vs_kserve"]
    throughput["median"], p99["median"] = 3.0, 1.0  # both bounds inclusive
    rows = SERVE_HF.rows(results)
    assert [row.met for row in rows[:2]] == [True, True]
    assert all(row.goal is None for row in rows[2:])
    throughput["median"], p99["median"] = 2.99, 1.01
    assert [row.met for row in SERVE_HF.rows(results)[:2]] == [False, False]


def test_the_storage_goal_judges_the_100_mib_copy_and_the_1_gib_copy_is_context() -> None:
    results = json.loads((RESULTS / "storage.json").read_text())
    results["large"] = copy.deepcopy({k: v for k, v in results.items() if k != "large"})
    results["large"]["init_vs_host"]["median"] = 0.5  # context: no verdict
    results["init_vs_host"]["median"] = 0.8
    rows = STORAGE.rows(results)
    assert [row.met for row in rows if row.goal is not None] == [True]
    assert len(rows) == 2 * len(STORAGE.rows({k: v for k, v in results.items() if k != "large"}))
    results["init_vs_host"]["median"] = 0.79
    assert STORAGE.rows(results)[0].verdict == "**not met**"


def test_every_row_judges_against_a_goal_declared_beside_its_benchmark() -> None:
    for section in report.SECTIONS:
        measured = report.measure(section)
        if measured.results is None:
            continue
        assert not measured.error, section.key
        used = [row.goal for row in measured.rows if row.goal is not None]
        declared = list(section.goals.values())
        assert all(any(goal is d for d in declared) for goal in used), section.key
        assert all(any(goal is d for d in used) for goal in declared), f"{section.key}: a declared goal is unused"
        assert {row.benchmark for row in measured.rows} == {section.key}


def test_the_page_includes_each_notes_file_verbatim() -> None:
    page = report.render()
    assert TRAIN.notes_file == "train/NOTES.md"  # bench/<key>/NOTES.md unless a section names its own
    named = [REPO / "bench" / s.notes_file for s in report.SECTIONS if s.notes]
    assert all(path.exists() for path in named), named  # a section that names its prose has it
    notes = [REPO / "bench" / "NOTES.md", *(REPO / "bench" / s.notes_file for s in report.SECTIONS)]
    for path in (path for path in notes if path.exists()):
        assert path.read_text().strip() in page, path


def test_missing_or_partial_results_lose_only_their_section(tmp_path: Path) -> None:
    (tmp_path / "operator.json").write_text(json.dumps({"machine": "m", "date": "d"}))
    (tmp_path / "train.json").write_text((RESULTS / "train.json").read_text())
    page = report.render(tmp_path)
    operator, trainer = (page.split(f"## {s.title}\n\n")[1].split("\n## ")[0] for s in (OPERATOR, TRAIN))
    assert operator.startswith("Results incomplete (KeyError('jobs_per_s')); rerun `make bench`.")
    assert "### Operator notes" in operator  # the prose stays
    assert "| trainer vs hand-written loop, ~1 ms steps" in trainer
    assert "## Dashboard (embedded control plane)\n\nNot measured yet: run `make bench`." in page
    assert "## GPU\n\nNot measured yet (no accelerator was available): run `bench/gpu.sh`." in page


def test_the_committed_page_is_what_the_report_renders() -> None:
    assert (REPO / "docs" / "benchmarks.md").read_text() == report.render(), "run `python bench/report.py`"


def test_the_report_types_no_numbers() -> None:
    """Numbers come from results files and NOTES; thresholds from each benchmark's goals."""
    tree = ast.parse((REPO / "bench" / "report.py").read_text())
    numbers = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (int, float)}
    assert numbers <= {0, 1}

