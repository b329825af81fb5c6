"""What the compression benchmark (bench_compress.py) compares, and the goal of each comparison: its
section of docs/benchmarks.md, read from bench/results/compress.json. Every compressed model is timed
against its fp32 original in the same rounds; speed-ups are fp32 time over compressed time."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value, ratio

BENCHMARK = "compress"
DROP = " point"
GOALS = {
    "dynamic_int8_batch1": Goal(ratio=Bound(">=", 2.5, "x")),
    "dynamic_int8_batch8": Goal(ratio=Bound(">=", 2.2, "x")),
    "dynamic_int8_linear_size": Goal(ratio=Bound(">=", 3.9, "x")),
    "dynamic_int8_drop": Goal(ours=Bound("<=", 1, DROP)),
    "torchao_vs_eager": Goal(ratio=Bound(">=", 0.9)),
    "torchao_not_slower": Goal(ratio=Bound(">=", 1.0, "x")),  # slower than fp32: off its fast path
    "prune_ffn_50_batch8": Goal(ratio=Bound(">=", 1.3, "x")),
    "static_cnn_speedup": Goal(ratio=Bound(">=", 3.0, "x")),
    "static_cnn_size": Goal(ratio=Bound(">=", 3.8, "x")),
    "static_cnn_drop": Goal(ours=Bound("<=", 0.5, DROP)),
    "distill_metric_kept": Goal(ratio=Bound(">=", 0.95)),
    "distill_batch8": Goal(ratio=Bound(">=", 1.6, "x")),
}


def _ms(name: str, part: Obj, key: str) -> str | None:
    return f"{name} {part[key]:.2f} ms" if key in part else None


def _speedup(what: str, part: Obj, goal: Goal | None = None, base: str = "fp32", other: str = "int8") -> Row:
    """A speed-up, with both sides' median time per call where the benchmark kept them."""
    return Row(BENCHMARK, what, baseline=_ms(base, part, "base_ms"), ours=_ms(other, part, "other_ms"),
               ratio=ratio(part), goal=goal)


def _drop(what: str, fp32: float, other: float, drop: float, goal: Goal = GOALS["dynamic_int8_drop"]) -> Row:
    """An accuracy drop in points, with both accuracies."""
    return Row(BENCHMARK, what, baseline=f"fp32 {100 * fp32:.2f} %",
               ours=Value(drop, digits=2, unit=" points", detail=f" (int8 {100 * other:.2f} %)"), goal=goal)


def _d768(m: Obj | None) -> list[Row]:
    """The drop on the d-768 encoder itself (its own section of the results), when it was measured."""
    if not m:
        return []
    return [_drop(f"dynamic int8, every Linear, on the d-{m['dim']} encoder itself ({m['heads']} heads, trained "
                  f"{m['train_steps']} steps, {m['train_s']:.0f} s): accuracy drop",
                  m["fp32_accuracy"], m["int8_accuracy"], m["drop_points"])]


def _dynamic(e: Obj, d768: Obj | None) -> list[Row]:
    m, dyn = e["metric"], e["dynamic_int8"]
    trained = f"encoder d {m['dim']} trained {m['train_steps']} steps on digits patch tokens"
    return [
        _speedup("dynamic int8 (eager), BERT-like encoder (d 768, seq 128), batch 1: speed-up", dyn["batch1"],
                 GOALS["dynamic_int8_batch1"]),
        _speedup("dynamic int8 (eager), batch 8: speed-up", dyn["batch8"], GOALS["dynamic_int8_batch8"]),
        Row(BENCHMARK, "dynamic int8: Linear weights smaller",
            ratio=Value(dyn["linear_size_ratio"], digits=2, unit="x"), goal=GOALS["dynamic_int8_linear_size"]),
        _drop(f"dynamic int8, every Linear: accuracy drop ({trained}, {m['eval_samples']} held-out images)",
              m["fp32_accuracy"], m["int8_accuracy"], m["drop_points"]),
        _drop("dynamic int8, classifier head kept in fp32: accuracy drop", m["fp32_accuracy"],
              m["int8_head_fp32_accuracy"], m["drop_points_head_fp32"]),
        *_d768(d768)]


def _torchao(e: Obj) -> list[Row]:
    ao, aoc, rel = e["torchao_eager"], e["torchao_compiled"], e["torchao_vs_eager"]
    compiled = f"torchao int8 under torch.compile with freezing (compile {aoc['compile_s']:.0f} s)"
    return [row for b in (1, 8) for row in (
        _speedup(f"torchao int8, eager, batch {b}: speed-up", ao[f"batch{b}"], other="torchao"),
        _speedup(f"{compiled}, batch {b}: speed-up", aoc[f"batch{b}"], GOALS["torchao_not_slower"], other="torchao"),
        _speedup(f"torchao compiled vs eager back end, batch {b} (eager int8 time / torchao time, same rounds)",
                 rel[f"batch{b}"], GOALS["torchao_vs_eager"]))]


def _prune(e: Obj) -> list[Row]:
    rows: list[Row] = []
    for key, what in (("prune_ffn_50", "50 % FFN width"), ("prune_heads_50", "50 % attention heads")):
        p, goal = e[key], GOALS.get(f"{key}_batch8")
        rows += [_speedup(f"structured pruning, {what}, batch 8: speed-up ({p['parameters_ratio']:.2f}x fewer "
                          "parameters)", p["batch8"], goal, other="pruned"),
                 _speedup(f"structured pruning, {what}, batch 1: speed-up", p["batch1"], other="pruned")]
    return rows


def _cnn_speed(cnn: Obj) -> list[Row]:
    rows: list[Row] = []
    for size in ("224px", "64px"):
        side, r = size.removesuffix("px"), cnn[size]
        rows += [_speedup(f"static int8 conv net (5 conv+bn+relu, {cnn['engine']} engine), {side}x{side} image, "
                          f"batch {b}: speed-up vs fp32 with BN folded", r[f"batch{b}"], GOALS["static_cnn_speedup"])
                 for b in (1, 8)]
        rows += [_speedup(f"static int8 conv net, {side}x{side}, batch {b}: speed-up vs fp32 as trained (BN not "
                          "folded)", r[f"batch{b}_vs_unfolded"]) for b in (1, 8)]
    return rows


def _cnn(cnn: Obj) -> list[Row]:
    fam, goal = cnn["family_cnn_digits"], GOALS["static_cnn_drop"]
    return [
        *_cnn_speed(cnn),
        Row(BENCHMARK, "static int8 conv net: weights smaller", ratio=Value(cnn["size_ratio"], digits=2, unit="x"),
            goal=GOALS["static_cnn_size"]),
        _drop(f"static int8 conv net trained {cnn['train_steps']} steps on digits: accuracy drop",
              cnn["fp32_accuracy"], cnn["int8_accuracy"], cnn["drop_points"], goal),
        _drop("static int8 on the trained digits CNN of our model family (pipeline): accuracy drop", fam["fp32"],
              fam["int8"], fam["drop_points"], goal)]


def _distill(d: Obj) -> list[Row]:
    return [
        Row(BENCHMARK, "dynamic int8 on the trained GPT (text): perplexity drop",
            baseline=f"fp32 perplexity {d['teacher_perplexity']:.2f}",
            ours=Value(d["gpt_dynamic_int8_drop"], digits=4,
                       detail=f" (int8 perplexity {d['gpt_dynamic_int8_perplexity']:.2f})")),
        Row(BENCHMARK, "half-depth distilled GPT student: teacher perplexity / student perplexity",
            baseline=f"teacher perplexity {d['teacher_perplexity']:.2f}",
            ours=f"student perplexity {d['student_perplexity']:.2f}",
            ratio=Value(d["metric_kept"]), goal=GOALS["distill_metric_kept"]),
        _speedup("half-depth student, batch 8: speed-up", d["batch8"], GOALS["distill_batch8"], "teacher", "student"),
        _speedup("half-depth student, batch 1: speed-up", d["batch1"], None, "teacher", "student")]


def rows(c: Obj) -> list[Row]:
    e = c["encoder"]
    return [*_dynamic(e, c.get("encoder_d768_metric")), *_torchao(e), *_prune(e), *_cnn(c["static_cnn"]),
            *_distill(c["distill"])]


def facts(c: Obj) -> list[str]:
    threads = ", ".join(f"{k} {v['threads']}" for k, v in c.items() if isinstance(v, dict) and "threads" in v)
    warning = (c.get("encoder") or {}).get("torchao_warning")
    return [f"torch threads: {threads}", *([f"**warning: {warning}**"] if warning else [])]


SECTION = Section(BENCHMARK, "Compression (CPU, against fp32 in the same run)", GOALS, rows, facts)
