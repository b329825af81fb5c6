"""What the language-model serving benchmark (bench_llm.py) measures against the goals of the serving
issue: its section of docs/benchmarks.md, read from bench/results/llm.json. B0 is a naive server
running `generate()` for one request at a time (KServe's plain Hugging Face backend's design), B1
`transformers serve --continuous-batching`. The int8 goal is the int8 LLM section's
(bench/compress/goals_llm_int8.py)."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, Value, stats

BENCHMARK = "llm"
GOALS = {
    "throughput_vs_b0": Goal(ratio=Bound(">=", 10, "x")),
    "throughput_vs_b1": Goal(ratio=Bound(">=", 1.0, "x"), text="aim 1.3x"),
    "ttft_p99_vs_b0": Goal(ratio=Bound("<=", 0.2, "x")),
    "itl_p50_32_vs_single": Goal(ratio=Bound("<=", 3, "x")),
    "kv_waste": Goal(ours=Bound("<=", 4, " %")),
    "kv_concurrency": Goal(ratio=Bound(">=", 2.5, "x")),
    "prefix_ttft_p50_on_vs_off": Goal(ratio=Bound("<=", 0.3, "x")),
    "server_ttft": Goal(ours=Bound("<=", 10, " %")),
}


def _tps(m: Obj, side: str) -> str:
    return f"{side} {m[side]['tokens_per_s']:.1f} tok/s"


def _s(m: Obj, side: str, key: str, label: str) -> str:
    return f"{label} {m[side][key]:.3f} s"


def _throughput(r: Obj) -> list[Row]:
    res, m = r["results"], r["medians"]
    agree = r.get("agreement_round1", {})
    same = f" (round 1: ours {agree['ours']}/{agree['of']} and B1 {agree['B1']}/{agree['of']} answers equal B0's)" \
        if agree else ""
    return [
        Row(BENCHMARK, f"32 streaming greedy clients, output tokens/s vs B0{same}", baseline=_tps(m, "B0"),
            ours=_tps(m, "ours"), ratio=stats(res["throughput_vs_b0"], unit="x"), goal=GOALS["throughput_vs_b0"]),
        Row(BENCHMARK, "32 clients, output tokens/s vs B1", baseline=_tps(m, "B1"), ours=_tps(m, "ours"),
            ratio=stats(res["throughput_vs_b1"], unit="x"), goal=GOALS["throughput_vs_b1"]),
        Row(BENCHMARK, "32 clients, p99 time to first token vs B0", baseline=_s(m, "B0", "ttft_p99", "B0"),
            ours=_s(m, "ours", "ttft_p99", "ours"), ratio=stats(res["ttft_p99_vs_b0"], unit="x"),
            goal=GOALS["ttft_p99_vs_b0"]),
        Row(BENCHMARK, "p50 inter-token latency at 32 clients vs single-stream",
            baseline=_s(m, "single", "itl_p50", "single"), ours=_s(m, "ours", "itl_p50", "32 clients"),
            ratio=stats(res["itl_p50_32_vs_single"], unit="x"), goal=GOALS["itl_p50_32_vs_single"]),
    ]


def _cache(r: Obj) -> list[Row]:
    res, m = r["results"], r["medians"]
    kv, waste = res["kv_concurrency"], res["kv_waste"]
    ttft = res["server_vs_client_ttft_p50"]
    return [
        Row(BENCHMARK, "KV cache waste (allocated minus used) while 32 streams run",
            ours=Value(100 * waste["median"], 100 * waste["min"], 100 * waste["max"], waste["rounds"], 1, " %"),
            goal=GOALS["kv_waste"]),
        Row(BENCHMARK, f"concurrent sequences at a fixed KV budget ({kv['budget_bytes'] / 2**20:.0f} MiB) vs "
            "contiguous max-length preallocation", baseline=f"{kv['contiguous_sequences']} sequences",
            ours=f"{kv['peak_running']:.0f} sequences ({kv['preemptions']:.0f} preemptions)",
            ratio=Value(kv["ratio"], digits=1, unit="x"), goal=GOALS["kv_concurrency"]),
        Row(BENCHMARK, "shared 512-token system prompt: p50 time to first token, prefix cache on vs off",
            baseline=_s(m, "prefix_ours_noprefix", "ttft_p50", "off"), ours=_s(m, "prefix_ours", "ttft_p50", "on"),
            ratio=stats(res["prefix_ttft_p50_on_vs_off"], unit="x"), goal=GOALS["prefix_ttft_p50_on_vs_off"]),
        Row(BENCHMARK, "server-reported TTFT p50 vs the client's: difference",
            ours=Value(100 * abs(ttft["median"] - 1), digits=1, unit=" %",
                       detail=f" (ratio {ttft['median']:.3f}, {ttft['min']:.3f}-{ttft['max']:.3f}, "
                              f"n={ttft['rounds']})"), goal=GOALS["server_ttft"]),
    ]


def rows(r: Obj) -> list[Row]:
    return [*_throughput(r), *_cache(r)]


def facts(r: Obj) -> list[str]:
    m, w = r["model"], r["workload"]
    low, high = w["prompt_tokens"]
    return [f"model Llama-style, {m['layers']} layers of width {m['hidden']}, {m['parameters'] / 1e6:.1f} M "
            f"parameters, made here", f"{w['clients']} clients, prompts of {low}-{high} tokens, {w['new_tokens']} "
            "new tokens each", f"B1: {r['b1']}"]


SECTION = Section(BENCHMARK, "Serving a causal language model (CPU)", GOALS, rows, facts,
                  run="bench/serve/bench_llm.py", notes="serve/NOTES-llm.md")
