"""What the GPU check (bench/gpu.sh) compares: its section of docs/benchmarks.md, read from
bench/results/gpu.json. It sets no goals yet: both rows are context."""

from __future__ import annotations

from bench.rows import Goal, Obj, Row, Section, Value

BENCHMARK = "gpu"
GOALS: dict[str, Goal] = {}


def rows(g: Obj) -> list[Row]:
    runs = g.get("ratios") or [g["trainer_vs_raw_loop_median"]]
    return [
        Row(BENCHMARK, "trainer vs raw bf16 loop (steps/s, interleaved)",
            ratio=Value(g["trainer_vs_raw_loop_median"], min(runs), max(runs), len(runs))),
        Row(BENCHMARK, "MFU: trainer FLOP/s over a bf16 matmul ceiling measured in the same run",
            ours=Value(g["mfu_median"], digits=2, detail=f" of a measured {g['bf16_matmul_tflops']:.0f} TFLOP/s"))]


def facts(g: Obj) -> list[str]:
    return [f"Device: {g['device']}"]


SECTION = Section(BENCHMARK, "GPU", GOALS, rows, facts, run="bench/gpu.sh",
                  missing="no accelerator was available")
