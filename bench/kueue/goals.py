"""What the Kueue benchmark (bench_kueue.py) measures, and the goal of each measurement: its section of
docs/benchmarks.md, read from bench/results/kueue.json. The goals are absolute times on the embedded
cluster with Kueue's real manager; there is no baseline column (no other integration runs here)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from bench.rows import Bound, Goal, Obj, Row, Section, Value

BENCHMARK = "kueue"
GOALS = {
    "admitted_p50": Goal(ours=Bound("<=", 300, " ms"), text="p50, idle queue"),
    "running_p95": Goal(ours=Bound("<=", 3, " s"), text="p95"),
    "preemption_p95": Goal(ours=Bound("<=", 5, " s"), text="p95"),
    "steps_lost": Goal(ours=Bound("=", 0), text="worst trial"),
    "throughput": Goal(ours=Bound("<=", 120, " s"), text="all Succeeded"),
    "lost": Goal(ours=Bound("=", 0), text="jobs not Succeeded"),
    "run_twice": Goal(ours=Bound("=", 0), text="jobs whose pod ran more than once"),
}
WHAT = {"admitted_p50": "create call -> its Workload Admitted", "running_p95": "Admitted -> all ranks' pods Running",
        "preemption_p95": "preemption round trip", "steps_lost": "victim's steps lost",
        "throughput": "one-pod jobs through one ClusterQueue", "lost": "jobs lost", "run_twice": "jobs run twice"}


def _dist(d: Obj, scale: float = 1, digits: int = 2, unit: str = " s", key: str = "median") -> Value:
    label = "p50" if key == "median" else key
    other = "p95" if key == "median" else "median"
    return Value(d[key] * scale, d["min"] * scale, d["max"] * scale, d["rounds"], digits, unit, label,
                 f", {other} {d[other] * scale:.{digits}f}{unit}")


def _latency(r: Obj) -> list[Row]:
    lat = r["latency"]
    created, admitted = lat["workload_created_s"], lat["admitted_s"]
    return [
        Row(BENCHMARK, f"create call -> its Workload Admitted (one {lat['nodes_per_job']}-node job at a time)",
            ours=_dist(admitted, 1000, 0, " ms"), goal=GOALS["admitted_p50"]),
        Row(BENCHMARK, "of which: create call -> the operator's Workload seen, median",
            ours=Value(created["median"] * 1000, digits=0, unit=" ms",
                       detail=f"; Workload -> Admitted {(admitted['median'] - created['median']) * 1000:.0f} ms")),
        Row(BENCHMARK, "Admitted -> all ranks' pods Running", ours=_dist(lat["running_after_admitted_s"], key="p95"),
            goal=GOALS["running_p95"]),
    ]


def _preemption(r: Obj) -> list[Row]:
    p = r["preemption"]
    ok = [t for t in p["trials"] if "error" not in t]
    failed = len(p["trials"]) - len(ok)
    phases = ", ".join(f"{what} {sorted(t[key] for t in ok)[len(ok) // 2]:.2f} s" for what, key in (
        ("victim evicted", "evicted_s"), ("victim's pods stopped", "victim_stopped_s"),
        ("high Admitted", "admitted_s"), ("high running", "high_running_s"))) if ok else "-"
    lost = p["steps_lost"]
    if not ok:
        return _missing(("preemption_p95", "steps_lost"), f"every trial failed: {p['trials'][0]['error'][:120]}")
    return [
        Row(BENCHMARK, "preemption: high-priority job created -> Admitted, the low-priority victim's pods stopped"
                       + (f" ({failed} trials failed)" if failed else ""),
            ours=_dist(p["round_trip_s"], key="p95"), goal=GOALS["preemption_p95"]),
        Row(BENCHMARK, "preemption, median time from the create call to each step", ours=phases),
        Row(BENCHMARK, "victim's steps lost (last step trained before eviction - step resumed from)",
            ours=Value(lost["max"], digits=0, unit=" steps", label="max", detail=f" (n={lost['rounds']})"),
            goal=GOALS["steps_lost"]),
    ]


def _throughput(r: Obj, key: str) -> list[Row]:
    if key not in r:
        return []
    t = r[key]
    n, done, main = t["jobs"], t["all_done_s"], key == "throughput"
    on = f"image {t['image']}, the command bare" if main else "the trainer image, under its command wrapper"
    what = f"{n} one-pod jobs ({on}) through one ClusterQueue admitting {t['quota']} at once: first create -> " \
           f"last Succeeded"
    wall = (Value(done, digits=1, unit=" s", detail=f" (all created after {t['created_s']} s)") if done is not None
            else Value(t["wall_s"], digits=1, unit=" s", label="over",
                       detail=f" (stopped: {t['succeeded']} of {n} Succeeded by then)"))
    api, rss = t["api_get_s"], t["operator_peak_rss_mib"]
    return [
        Row(BENCHMARK, what, ours=wall, goal=GOALS["throughput"] if main else None),
        Row(BENCHMARK, "of these, Succeeded within 60 s / 120 s / 300 s of the first create",
            ours=f"{t['succeeded_by_60s']} / {t['succeeded_by_120s']} / {t['succeeded_by_300s']}"),
        Row(BENCHMARK, "of these, lost (not Succeeded" + ("" if t["complete"] else ", the run stopped early") + ")",
            ours=Value(t["lost"], digits=0, detail=f" ({t['failed']} Failed)"), goal=GOALS["lost"]),
        Row(BENCHMARK, "of these, run twice (more than one pod, a container restart or a second marker line)",
            ours=Value(t["run_twice"], digits=0, detail=f" (job restartCounts summed: {t['job_restart_counts']})"),
            goal=GOALS["run_twice"]),
        Row(BENCHMARK, "during that run: API server GET latency (one a second); operator peak RSS",
            ours=f"p50 {api['median'] * 1000:.0f} ms, p95 {api['p95'] * 1000:.0f} ms, max {api['max'] * 1000:.0f} ms; "
                 f"{rss} MiB"),
    ]


def _missing(goals: tuple[str, ...], why: str) -> list[Row]:
    return [Row(BENCHMARK, WHAT[g], goal=GOALS[g], missing=why) for g in goals]


PARTS: tuple[tuple[str, Callable[[Obj], list[Row]], tuple[str, ...]], ...] = (
    ("latency", _latency, ("admitted_p50", "running_p95")),
    ("preemption", _preemption, ("preemption_p95", "steps_lost")),
    ("throughput", partial(_throughput, key="throughput"), ("throughput", "lost", "run_twice")),
    ("throughput_wrapper", partial(_throughput, key="throughput_wrapper"), ()),
)


def rows(r: Obj) -> list[Row]:
    """Each part's rows; a part the run did not reach keeps its goals, marked not measured."""
    out: list[Row] = []
    for key, make, goals in PARTS:
        out += make(r) if key in r else _missing(goals, f"the run stopped before the {key} part")
    return out


def facts(r: Obj) -> list[str]:
    lat, p = r.get("latency", {}), r.get("preemption", {})
    ok = [x for x in p.get("trials", []) if "error" not in x]
    rate = sorted(x["victim_steps_per_s"] for x in ok)[len(ok) // 2] if ok else 0
    parts = [f"{lat.get('jobs', 0)} latency jobs", f"{len(p.get('trials', []))} preemptions (victim: an MLP on "
             f"digits at ~{rate:.0f} steps/s, no periodic checkpoint)"]
    parts += [f"{r[k]['jobs']} throughput jobs {how}" for k, how in (("throughput", "bare"),
                                                                       ("throughput_wrapper", "under the wrapper"))
              if k in r]
    loads = [f"load average (1 min) {r['load_1m_at_start']:.1f} at the start"]
    loads += [f"{r[k]['load_1m']['median']:.1f} median (max {r[k]['load_1m']['max']:.1f}) during the {k} run"
              for k in ("throughput", "throughput_wrapper") if r.get(k, {}).get("load_1m", {}).get("rounds")]
    return [", ".join(parts), ", ".join(loads)]


SECTION = Section(BENCHMARK, "Queueing with Kueue (embedded cluster, Kueue v0.17.0)", GOALS, rows, facts,
                  run="python bench/kueue/bench_kueue.py")
