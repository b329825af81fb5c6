"""What the fine-tuning benchmark (bench_finetune.py) measures against the goals of the fine-tuning
issue: its section of docs/benchmarks.md, read from bench/results/finetune.json. The goals that are
correctness checks (FSDP parity, resume, merge) are tests, not benchmarks: their rows name the test.
The int8 goal of the fine-tuned model is the int8 LLM section's (bench/compress/goals_llm_int8.py)."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value, ratio

BENCHMARK = "finetune"
GOALS = {
    "trainable": Goal(ours=Bound("<=", 2, " %")),
    "lora_speed": Goal(ratio=Bound(">=", 1.3, "x")),
    "lora_memory": Goal(ratio=Bound("<=", 0.6, "x")),
    "lora_loss": Goal(ours=Bound("<=", 5, " %")),
    "vs_handwritten": Goal(ratio=Bound(">=", 0.97, "x")),
    "packing_speed": Goal(ratio=Bound(">=", 1.5, "x")),
    "packing_loss": Goal(ours=Bound("<=", 1, " %")),
    "fsdp": Goal(text="losses equal to 1e-4 for 50 steps"),
    "resume": Goal(text="resumed losses equal the uninterrupted run's to 1e-6, every sample once"),
    "merge": Goal(text="logits within 1e-5"),
}
TESTS = {  # goal -> (what, the test that checks it, how it differs from the goal)
    "fsdp": ("2-process FSDP vs 1 process, same global batch and seed: losses",
             "tests/component/test_finetune_runs.py::test_two_fsdp_ranks_compute_what_one_process_computes",
             "losses within 1e-4 over 50 steps of a tiny model"),
    "resume": ("resume after SIGKILL vs the uninterrupted run: losses from the checkpoint on",
               "tests/component/test_finetune_runs.py::test_a_killed_gang_resumes_exactly_from_its_checkpoint",
               "within 1e-6, every later step once, on a tiny model"),
    "merge": ("merged model vs base + adapter: logits",
              "tests/component/test_finetune_data.py::test_merged_model_computes_what_base_plus_adapter_computes",
              "within 1e-5 on a tiny model"),
}


def _loss(e: Obj, a: str, b: str) -> str:
    return f"eval loss {a} {e[a]['after']:.4f}, {b} {e[b]['after']:.4f}"


def _lora(r: Obj) -> list[Row]:
    lf = r["lora_vs_full"]
    mib = lf["peak_rss_mib"]
    floor = f" (import floor {mib['import_floor']:.0f} MiB)"
    return [
        Row(BENCHMARK, "LoRA: share of parameters trained", baseline="full 100 %",
            ours=Value(100 * lf["trainable_fraction"], digits=2, unit=" %"), goal=GOALS["trainable"]),
        Row(BENCHMARK, "LoRA vs full fine-tune, same data and steps (2 ranks, DDP): training tokens/s",
            ratio=ratio(lf, unit="x"), goal=GOALS["lora_speed"]),
        Row(BENCHMARK, "LoRA vs full: peak memory above what importing torch, transformers and peft takes",
            baseline=f"full {mib['full'] - mib['import_floor']:.0f} MiB",
            ours=f"LoRA {mib['lora'] - mib['import_floor']:.0f} MiB",
            ratio=ratio(lf["peak_rss_above_import_floor"], unit="x"), goal=GOALS["lora_memory"]),
        Row(BENCHMARK, "LoRA vs full: peak memory of the whole process" + floor,
            baseline=f"full {mib['full']:.0f} MiB", ours=f"LoRA {mib['lora']:.0f} MiB",
            ratio=ratio(lf["peak_rss"], unit="x"), goal=GOALS["lora_memory"]),
        Row(BENCHMARK, f"LoRA vs full: final eval loss after {r['setup']['quality_steps']} steps, relative difference",
            baseline=_loss(lf["eval_loss"], "full", "lora"),
            ours=Value(100 * lf["eval_loss_relative_difference"], digits=2, unit=" %"), goal=GOALS["lora_loss"]),
    ]


def _loop_and_packing(r: Obj) -> list[Row]:
    th, pk = r["trainer_vs_handwritten"], r["packing_vs_unpacked"]
    equal = "equal" if th["losses_equal_1e-5"] else "different"
    return [
        Row(BENCHMARK, "Kubeforge's fine-tune vs a hand-written transformers + peft loop, same model, data and "
            f"batch, one process each at once: tokens/s (losses {equal}, max difference "
            f"{th['max_loss_difference']:.1e})", ratio=ratio(th, unit="x"), goal=GOALS["vs_handwritten"]),
        Row(BENCHMARK, "packing vs one example per row, long-tailed chat data: tokens/s", ratio=ratio(pk, unit="x"),
            goal=GOALS["packing_speed"]),
        Row(BENCHMARK, "packing vs unpacked: final eval loss, relative difference",
            baseline=_loss(pk["eval_loss"], "unpacked", "packed"),
            ours=Value(100 * pk["eval_loss_relative_difference"], digits=2, unit=" %"), goal=GOALS["packing_loss"]),
    ]


def _tests() -> list[Row]:
    return [Row(BENCHMARK, what, goal=GOALS[key], missing=f"a correctness test, not benchmarked: {test} ({how})")
            for key, (what, test, how) in TESTS.items()]


def rows(r: Obj) -> list[Row]:
    return [*_lora(r), *_loop_and_packing(r), *_tests()]


def facts(r: Obj) -> list[str]:
    s = r["setup"]
    m = s["model"]
    return [f"model Llama-style, {m['layers']} layers of width {m['hidden']}, {s['params'] / 1e6:.1f} M parameters, "
            f"pre-trained here {s['pretrain_steps']} steps", f"{s['steps']} timed steps of batch {s['batch']}, "
            f"sequences up to {s['max_seq_length']} tokens", f"LoRA rank {s['lora']['rank']} on every linear layer",
            f"{r['seconds']} s"]


SECTION = Section(BENCHMARK, "Fine-tuning a causal language model (CPU)", GOALS, rows, facts,
                  run="bench/train/bench_finetune.py", notes="train/NOTES-finetune.md")
