"""What the node loss benchmark (bench_node_loss.py) measures, and the goal of each measurement: its
section of docs/benchmarks.md, read from bench/results/node_loss.json."""

from __future__ import annotations

import statistics

from bench.rows import Bound, Goal, Obj, Row, Section, Value

BENCHMARK = "node_loss"
STOCK = ("stock Kubernetes: ~355 s until the pod is even evicted (40 s node grace + 300 s unreachable toleration + "
         "eviction), then a gang needs a human to restart it")
GOALS = {
    "recovery_p50": Goal(ours=Bound("<=", 10, " s"), text="p50"),
    "recovery_p95": Goal(ours=Bound("<=", 15, " s"), text="p95"),
    "steps_redone": Goal(ours=Bound("<=", 1, " step"), text="worst trial; one checkpoint interval"),
    "trials": Goal(ours=Bound(">=", 100), text="half kills, half partitions"),
    "double_running": Goal(ours=Bound("=", 0)),
    "accepted_fenced_writes": Goal(ours=Bound("=", 0)),
}
PHASES = ("node not ready", "new pods created", "new pods running", "processes started")


def _recovery(r: Obj) -> list[Row]:
    k, p = r["recovery_kill_s"], r["recovery_partition_s"]
    what = "node death (agent and its pods SIGKILLed) -> whole gang running on other nodes, rank 0 past its checkpoint"
    rows = [Row(BENCHMARK, f"{what}, p50", baseline=STOCK, goal=GOALS["recovery_p50"],
                ours=Value(k["median"], k["min"], k["max"], k["rounds"], 1, " s", "p50")),
            Row(BENCHMARK, f"{what}, p95", goal=GOALS["recovery_p95"],
                ours=Value(k["p95"], rounds=k["rounds"], digits=1, unit=" s", label="p95"))]
    if p.get("rounds"):
        rows.append(Row(BENCHMARK, "partition (node cut off, its pods keep running) -> the same, p50",
                        ours=Value(p["median"], p["min"], p["max"], p["rounds"], 1, " s", "p50",
                                   f", p95 {p['p95']:.1f} s")))
    return rows


def _phases(r: Obj) -> Row:
    """Where a node death's recovery goes: the median time to each step, from the loss."""
    kills = [t["phases_s"] for t in r["trials"] if t.get("action") == "kill" and "phases_s" in t]
    parts = [f"{name} {statistics.median(t[name] for t in kills if name in t):.1f} s" for name in PHASES
             if any(name in t for t in kills)]
    return Row(BENCHMARK, "node death, median time from the loss to each step", ours=", ".join(parts) or "-")


def _fencing(r: Obj) -> list[Row]:
    f, redone = r["fencing"], r["steps_redone"]
    lag = f["fenced_exit_lag_s"]
    trials = f"{f['trials']} trials ({f['kills']} kills, {f['partitions']} partitions)"
    return [
        Row(BENCHMARK, "steps redone after a loss (checkpoint every step)", goal=GOALS["steps_redone"],
            ours=Value(redone["max"], digits=0, unit=" steps", label="max", detail=f", median {redone['median']:.0f}")),
        Row(BENCHMARK, "fencing trials", ours=Value(f["trials"], digits=0, detail=f" ({f['kills']} kills, "
                                                    f"{f['partitions']} partitions, {f['failed_trials']} failed)"),
            goal=GOALS["trials"]),
        Row(BENCHMARK, f"double-running ranks (two processes of one rank stepping at once), {trials}",
            ours=Value(f["double_running"], digits=0), goal=GOALS["double_running"]),
        Row(BENCHMARK, f"writes of a fenced attempt accepted (checkpoints the loader takes, history points the "
                       f"reader takes), {trials}", ours=Value(f["accepted_fenced_writes"], digits=0,
                                                             detail=f" ({f['refused']} writes refused)"),
            goal=GOALS["accepted_fenced_writes"]),
        Row(BENCHMARK, "a cut-off old rank's refused write and exit, from the newer attempt's first beat (which "
                       "follows its fence record: negative when refused before it)",
            ours=Value(lag["median"], lag["min"], lag["max"], lag["rounds"], 2, " s") if lag.get("rounds") else "-"),
    ]


def rows(r: Obj) -> list[Row]:
    return [*_recovery(r), _phases(r), *_fencing(r)]


def facts(r: Obj) -> list[str]:
    load = r.get("load_average_1m") or {}
    return [f"{r['nodes_per_cluster']} node agents per cluster (a new cluster once kills leave fewer than 3)",
            f"a 2-node job stepping every {r['step_seconds']} s with a checkpoint every step",
            *([f"load average (1 min) at the losses {load['min']:.1f}-{load['max']:.1f}, median "
               f"{load['median']:.1f}"] if load.get("rounds") else []),
            f"{r['wall_minutes']} min" + ("" if r.get("complete") else ", stopped before all trials ran")]


SECTION = Section(BENCHMARK, "Node loss and fencing (embedded clusters of 12 nodes)", GOALS, rows, facts,
                  run="python bench/cluster/bench_node_loss.py", notes="cluster/NOTES.md")
