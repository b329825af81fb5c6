"""What the trainer benchmark (bench_train.py) compares, and the goal of each comparison: its section
of docs/benchmarks.md, read from bench/results/train.json. Each part is saved as it finishes, so a
part that failed or never ran shows as not measured while the others still show."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value, ratio, unmeasured

BENCHMARK = "train"
GOALS = {
    "trainer_vs_loop_1ms": Goal(ratio=Bound(">=", 0.97)),
    "trainer_vs_loop_1ms_concurrent": Goal(ratio=Bound(">=", 0.97)),
    "trainer_vs_loop_10ms": Goal(ratio=Bound(">=", 0.97)),
    "ddp_vs_handwritten_ddp": Goal(ratio=Bound(">=", 0.97)),
    "fsdp_vs_ddp": Goal(ratio=Bound(">=", 0.85)),
    "cpu_mfu_vs_matmul_ceiling": Goal(ours=Bound(">=", 0.6)),
}
WHAT = {
    "trainer_vs_loop_1ms": "trainer vs hand-written loop, ~1 ms steps (MLP, batch 64, 1 thread), one after the other",
    "trainer_vs_loop_1ms_concurrent": "trainer vs hand-written loop, ~1 ms steps, both at once (rates over the "
                                      "shared window)",
    "trainer_vs_loop_10ms": "trainer vs hand-written loop, ≥ 10 ms steps (MLP 1024x3, batch 512)",
    "ddp_vs_handwritten_ddp": "our DDP vs hand-written DDP, same torchrun (2 ranks, gloo)",
    "fsdp_vs_ddp": "our FSDP vs our DDP, model that fits DDP (2 ranks, gloo)",
    "cpu_mfu_vs_matmul_ceiling": "CPU MFU: trainer FLOP/s (6 x params x samples/s) over an fp32 1024² matmul "
                                 "ceiling measured in the same run",
}
LOSSES = "losses_equal_1e-5"


def _losses(part: Obj) -> str | None:
    """Whether both sides' losses agreed to 1e-5, where the part compared them."""
    return None if LOSSES not in part else f"losses equal to 1e-5: {'yes' if part[LOSSES] else '**no**'}"


def _ratio_row(key: str, part: object) -> Row:
    why = unmeasured(part, "ratio_median")
    if why or not isinstance(part, dict):
        return Row(BENCHMARK, WHAT[key], goal=GOALS[key], missing=why)
    return Row(BENCHMARK, WHAT[key], ours=_losses(part), ratio=ratio(part), goal=GOALS[key])


def _mfu(part: object) -> Row:
    key = "cpu_mfu_vs_matmul_ceiling"
    why = unmeasured(part, "median")
    if why or not isinstance(part, dict):
        return Row(BENCHMARK, WHAT[key], goal=GOALS[key], missing=why)
    return Row(BENCHMARK, WHAT[key], ours=Value(part["median"], part.get("min"), part.get("max"), digits=2),
               goal=GOALS[key])


def rows(r: Obj) -> list[Row]:
    ratios = [key for key in WHAT if key != "cpu_mfu_vs_matmul_ceiling"]
    return [*(_ratio_row(key, r.get(key)) for key in ratios), _mfu(r.get("cpu_mfu_vs_matmul_ceiling"))]


SECTION = Section(BENCHMARK, "Trainer (CPU)", GOALS, rows, run="make bench (bench/train/bench_train.py)")
