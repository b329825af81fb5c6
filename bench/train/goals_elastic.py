"""What the elastic resize benchmark (bench_elastic.py) measures, and the goal of each measurement:
its section of docs/benchmarks.md, read from bench/results/elastic.json. The goals are absolute
times on the embedded cluster; no other operator runs an elastic job end to end to compare with."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value

BENCHMARK = "elastic"
GOALS = {
    "shrink": Goal(ours=Bound("<=", 10, " s"), text="no counted restart"),
    "grow": Goal(ours=Bound("<=", 10, " s"), text="after the node is Ready"),
    "restarts": Goal(ours=Bound("=", 0), text="restartCount in every trial"),
}


def _seconds(r: Obj, key: str) -> Value:
    s = r[key]
    return Value(s["median"], s["min"], s["max"], len(r["trials"]), 1, " s")


def rows(r: Obj) -> list[Row]:
    restarts = max(int(t["restartCount"]) for t in r["trials"])
    return [
        Row(BENCHMARK, "3 -> 2 workers: a worker's node killed -> rank 0 checkpointing in a 2-rank world",
            baseline="a gang restart (Training Operator v1's elasticPolicy has no end-to-end test)",
            ours=_seconds(r, "shrinkSeconds"), goal=GOALS["shrink"]),
        Row(BENCHMARK, "2 -> 3 workers: the node Ready again -> rank 0 checkpointing in a 3-rank world",
            ours=_seconds(r, "growSeconds"), goal=GOALS["grow"]),
        Row(BENCHMARK, "restarts counted over the trials", ours=Value(restarts, digits=0, label="max"),
            goal=GOALS["restarts"]),
    ]


def facts(r: Obj) -> list[str]:
    return [f"{len(r['trials'])} trials on one three-node embedded cluster (a revived node serves the next)"]


SECTION = Section(BENCHMARK, "Elastic training (three-node embedded cluster)", GOALS, rows, facts,
                  run="python bench/train/bench_elastic.py", notes="train/NOTES-elastic.md")
