"""What the operator benchmark (bench_operator.py) compares, and the goal of each comparison: its
section of docs/benchmarks.md, read from bench/results/operator.json."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value, ratio

BENCHMARK = "operator"
GOALS = {
    "jobs_per_s": Goal(ours=Bound(">=", 10, " jobs/s"), ratio=Bound(">=", 0.8, "x")),
    "create_to_pods_ms_single": Goal(ours=Bound("<=", 100, " ms"), text="p50"),
    "writes_per_lifecycle": Goal(ours=Bound("<=", 6), text="events apart"),
    "writes_on_noop_resync": Goal(ours=Bound("=", 0)),
    "rss_mb_at_jobs": Goal(ours=Bound("<=", 200, " MB")),
}


def _calls(calls: dict[str, float], digits: int = 1) -> str:
    return ", ".join(f"{k} {v:.{digits}f}" for k, v in calls.items())


def _throughput(j: Obj) -> Row:
    return Row(BENCHMARK, "jobs/s creating 4-node TrainingJobs until all pods exist",
               baseline=f"hand-written asyncio client creating the same Service + 4 pods directly "
                        f"({j['baseline_median']:.1f} jobs/s)",
               ours=Value(j["operator_median"], digits=1, unit=" jobs/s"), ratio=ratio(j), goal=GOALS["jobs_per_s"])


def _latency(what: str, lat: Obj, goal: Goal | None) -> Row:
    return Row(BENCHMARK, what, ours=Value(lat["p50"], rounds=lat["n"], digits=0, unit=" ms", label="p50",
                                           detail=f", p99 {lat['p99']:.0f} ms"), goal=goal)


def _cpu(cpu: dict[str, float]) -> list[Row]:
    """CPU per job of the operator process and the control plane, on each side of the throughput rounds."""
    def side(name: str) -> str:
        return f"operator {cpu[f'operator {name}']:.1f} ms, control plane {cpu[f'control_plane {name}']:.1f} ms"
    return [Row(BENCHMARK, "CPU per job in the throughput rounds (median of rounds)",
                baseline=f"baseline path: {side('baseline')}", ours=f"operator path: {side('operator')}")]


def _writes(r: Obj) -> Row:
    w = r["writes_per_lifecycle"]
    objects = sum(v for k, v in w.items() if "events" not in k)
    return Row(BENCHMARK, "API writes per 2-node job lifecycle (to Succeeded)",
               baseline=r.get("writes_per_lifecycle_goal"),
               ours=Value(objects, digits=1, unit=" object writes",
                          detail=f" + {w.get('POST events', 0):.1f} events ({_calls(w)})"),
               goal=GOALS["writes_per_lifecycle"])


def _rss_and_resync(r: Obj) -> list[Row]:
    rss, resync = r["rss_mb_at_jobs"], r["writes_on_noop_resync"]
    calls = f" ({_calls(resync, 0)})" if resync else ""
    return [Row(BENCHMARK, f"writes during a no-op resync (operator restart over {rss['jobs']} settled jobs)",
                ours=Value(sum(resync.values()), digits=0, detail=calls), goal=GOALS["writes_on_noop_resync"]),
            Row(BENCHMARK, f"operator RSS with {rss['jobs']} jobs", ours=Value(rss["rss_mb"], digits=0, unit=" MB"),
                goal=GOALS["rss_mb_at_jobs"])]


def rows(r: Obj) -> list[Row]:
    j, load = r["jobs_per_s"], r["create_to_pods_ms_under_load"]
    burst = f"{j['rounds']}x{load['n'] // j['rounds']}"
    return [
        _throughput(j),
        _latency("create -> all 4 pods exist, one job at a time", r["create_to_pods_ms_single"],
                 GOALS["create_to_pods_ms_single"]),
        _latency(f"create -> all 4 pods exist, {burst} jobs in bursts", load, None),
        *(_cpu(r["cpu_ms_per_job"]) if "cpu_ms_per_job" in r else []),
        _writes(r), *_rss_and_resync(r)]


SECTION = Section(BENCHMARK, "Operator (embedded control plane)", GOALS, rows)
