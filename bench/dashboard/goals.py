"""What the dashboard benchmark (bench_dashboard.py) compares, and the goal of each comparison: its
section of docs/benchmarks.md, read from bench/results/dashboard.json."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value, ratio, stats

BENCHMARK = "dashboard"
GOALS = {
    "overview_s": Goal(ours=Bound("<=", 1, " s")),
    "overview_calls": Goal(ours=Bound("<=", 3), text="none per job"),
    "job_page_calls": Goal(ratio=Bound("=", 1), text="bounded, independent of history"),
}


def _breakdown(calls: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))


def _calls(calls: dict[str, int]) -> str:
    return f"{sum(calls.values())} ({_breakdown(calls)})"


def _overview(d: Obj) -> list[Row]:
    return [
        Row(BENCHMARK, f"overview of {d['jobs']} TrainingJobs (200-point histories), one server-side render "
                       "(AppTest); ratio: speed-up over per-job reads",
            baseline=f"per-job reads: list names, then one GET per job ({d['baseline_s']['median']:.2f} s)",
            ours=stats(d["overview_s"], digits=2, unit=" s"), ratio=ratio(d["speedup_vs_per_job"]),
            goal=GOALS["overview_s"]),
        Row(BENCHMARK, "the overview's reads alone, from the watch-fed mirrors",
            baseline=f"plain lists of both kinds, decoded and validated ({d['overview_lists_s']['median']:.2f} s: "
                     "the first render's cost)",
            ours=stats(d["overview_reads_s"], digits=3, unit=" s"))]


def _calls_rows(d: Obj) -> list[Row]:
    calls = d["overview_calls"]
    short, long = d["job_page_calls_history_10"], d["job_page_calls_history_200"]
    return [
        Row(BENCHMARK, "API calls per overview refresh", baseline=f"{d['jobs'] + 2} (per-job)",
            ours=Value(sum(calls.values()), digits=0, detail=f" ({_breakdown(calls)})"),
            goal=GOALS["overview_calls"]),
        Row(BENCHMARK, "API calls of a job page, 200-point vs 10-point history",
            baseline=f"10-point: {_calls(short)}", ours=f"200-point: {_calls(long)}",
            ratio=Value(sum(long.values()) / sum(short.values())), goal=GOALS["job_page_calls"])]


def rows(d: Obj) -> list[Row]:
    return [*_overview(d), *_calls_rows(d)]


SECTION = Section(BENCHMARK, "Dashboard (embedded control plane)", GOALS, rows)
