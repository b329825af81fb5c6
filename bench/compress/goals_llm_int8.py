"""What the int8 language-model benchmark (bench_llm_int8.py) measures against the int8 goals of the
fine-tuning issue (decode at batch 1 >= 1.5x fp32 through the compression stage, perplexity increase
<= 2 %) and of the serving issue (single-stream decode tokens/s >= 1.5x fp32 through the generation
engine, at the same perplexity budget): its section of docs/benchmarks.md, read from
bench/results/llm_int8.json. The stage reports quartiles of its per-round speed-ups; the serving side
min-max."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value, ratio

BENCHMARK = "llm_int8"
GOALS = {"decode": Goal(ratio=Bound(">=", 1.5, "x")), "perplexity": Goal(ours=Bound("<=", 2, " %"))}
FORMS = {"eager_dynamic_int8": "eager back end: torch.ao dynamic int8 Linear (what the stage makes and serves)",
         "torchao_dynamic_int8_eager": "torchao int8 dynamic activations and weights, eager",
         "torchao_weight_only_int8_eager": "torchao int8 weight-only, eager"}


def _quartiles(s: Obj, rounds: int) -> Value:
    return Value(s["median"], digits=2, unit="x", detail=f" (quartiles {s['q1']:.2f}-{s['q3']:.2f}, n={rounds})")


def _stage(r: Obj) -> list[Row]:
    st = r["stage"]
    rate, ppl = st["decode_tokens_per_s"], st["perplexity"]
    windows, tokens = ppl["windows_of_tokens"]
    return [
        Row(BENCHMARK, "fine-tuning issue: int8 of the fine-tuned model through the compression stage, decode at "
            "batch 1 (a token over a 127-token KV cache) vs fp32", baseline=f"fp32 {rate['fp32']:.1f} tok/s",
            ours=f"int8 {rate['int8']:.1f} tok/s", ratio=_quartiles(st["speedup_batch1"], st["rounds"]),
            goal=GOALS["decode"]),
        Row(BENCHMARK, f"both issues: perplexity increase of int8 on held-out text ({windows} windows of {tokens} "
            "tokens)", baseline=f"fp32 {ppl['fp32']:.3f}",
            ours=Value(100 * ppl["increase"], digits=2, unit=" %", detail=f" (int8 {ppl['int8']:.3f})"),
            goal=GOALS["perplexity"]),
        Row(BENCHMARK, "the stage at batch 8 decode (context)", ratio=_quartiles(st["speedup_batch8"], st["rounds"])),
        Row(BENCHMARK, f"the stage's verdict (objective latency, maxPerplexityIncrease {ppl['budget']})",
            ours=f"{st['verdict']}: {st['note']}"),
    ]


def _serving(r: Obj) -> list[Row]:
    sv = r["serving"]
    return [
        Row(BENCHMARK, f"serving issue: single-stream decode tokens/s through the generation engine, the int8 variant "
            f"vs the fp32 model ({sv['prompt_tokens']}-token prompts, {sv['new_tokens']} new tokens, greedy)",
            baseline=f"fp32 {sv['fp32_tokens_per_s']['median']:.1f} tok/s",
            ours=f"int8 {sv['int8_tokens_per_s']['median']:.1f} tok/s", ratio=ratio(sv, digits=2, unit="x"),
            goal=GOALS["decode"]),
        Row(BENCHMARK, "greedy tokens int8 and fp32 share (context)",
            ours=Value(100 * sv["greedy_tokens_equal"], digits=1, unit=" %")),
    ]


def _forms(r: Obj) -> list[Row]:
    fp32 = r["forms"]["fp32"]["ms_per_token"]["median"]
    return [Row(BENCHMARK, f"form: {what}, one decode step at batch 1 vs fp32 (context)",
                baseline=f"fp32 {fp32:.1f} ms", ours=f"{r['forms'][key]['ms_per_token']['median']:.1f} ms",
                ratio=ratio(r["forms"][key], digits=2, unit="x")) for key, what in FORMS.items() if key in r["forms"]]


def rows(r: Obj) -> list[Row]:
    return [*_stage(r), *_serving(r), *_forms(r)]


def facts(r: Obj) -> list[str]:
    m = r["model"]
    return [f"model Llama-style, {m['layers']} layers of width {m['hidden']}, {m['parameters'] / 1e6:.1f} M "
            f"parameters, fine-tuned here by {m['made_by'].split(' (')[0]}", f"{r['seconds']} s",
            *([f"load average {r['load_average'][0]:.1f} at start, {r['load_average'][1]:.1f} at end (a shared "
               "machine)"] if "load_average" in r else [])]


SECTION = Section(BENCHMARK, "Int8 of a fine-tuned causal language model (CPU)", GOALS, rows, facts,
                  run="bench/compress/bench_llm_int8.py", notes="compress/NOTES-llm-int8.md")
