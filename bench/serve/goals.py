"""What the inference-server benchmark (bench_serve.py) compares, and the goal of each comparison: its
section of docs/benchmarks.md, read from bench/results/serve.json. Ratios are ours over the other
server's, per round; the absolute points close the table as context."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, stats, unmeasured

BENCHMARK = "serve"
GOALS = {
    "throughput_c32_vs_naive": Goal(ratio=Bound(">=", 3.0)),
    "p99_c32_vs_naive": Goal(ratio=Bound("<=", 1.0)),
    "p50_c1_vs_naive": Goal(ratio=Bound("<=", 1.3)),
    "int8_throughput_c32_vs_naive_fp32": Goal(ratio=Bound(">=", 5.0)),
    "noop_vs_starlette": Goal(ratio=Bound(">=", 0.7)),
    "per_cpu_throughput_c32_vs_naive": Goal(ratio=Bound(">=", 3.0)),
    "per_cpu_int8_throughput_c32_vs_naive_fp32": Goal(ratio=Bound(">=", 5.0)),
    "per_cpu_noop_vs_starlette": Goal(ratio=Bound(">=", 0.7)),
    "kserve_throughput_c1": Goal(ratio=Bound(">", 1.0)),
    "per_cpu_kserve_throughput_c1": Goal(ratio=Bound(">", 1.0)),
    "kserve_p50_c1": Goal(ratio=Bound("<", 1.0)),
    "kserve_p99_c1": Goal(ratio=Bound("<", 1.0)),
    "kserve_throughput_c32": Goal(ratio=Bound(">", 1.0)),
    "per_cpu_kserve_throughput_c32": Goal(ratio=Bound(">", 1.0)),
    "kserve_p50_c32": Goal(ratio=Bound("<", 1.0)),
    "kserve_p99_c32": Goal(ratio=Bound("<", 1.0)),
}
WHAT = {
    "throughput_c32_vs_naive": "throughput at 32 clients vs naive per-request server",
    "p99_c32_vs_naive": "p99 at 32 clients vs naive",
    "p50_c1_vs_naive": "p50 at 1 client vs naive",
    "int8_throughput_c32_vs_naive_fp32": "int8 + batching throughput at 32 clients vs naive fp32",
    "noop_vs_starlette": "no-op endpoint req/s vs bare Starlette on uvicorn",
    "per_cpu_throughput_c32_vs_naive": "same, throughput at 32 clients per server CPU-second",
    "per_cpu_int8_throughput_c32_vs_naive_fp32": "same, int8 throughput per server CPU-second",
    "per_cpu_noop_vs_starlette": "same, no-op per server CPU-second",
    "kserve_throughput_c1": "vs KServe model server, throughput at 1 client",
    "per_cpu_kserve_throughput_c1": "vs KServe, throughput at 1 client per server CPU-second",
    "kserve_p50_c1": "vs KServe, p50 at 1 client",
    "kserve_p99_c1": "vs KServe, p99 at 1 client",
    "kserve_throughput_c32": "vs KServe model server, throughput at 32 clients",
    "per_cpu_kserve_throughput_c32": "vs KServe, throughput at 32 clients per server CPU-second",
    "kserve_p50_c32": "vs KServe, p50 at 32 clients",
    "kserve_p99_c32": "vs KServe, p99 at 32 clients",
}


def _ratio_row(key: str, part: object) -> Row:
    why = unmeasured(part, "median")
    if why or not isinstance(part, dict):
        return Row(BENCHMARK, WHAT[key], goal=GOALS[key], missing=why)
    return Row(BENCHMARK, WHAT[key], ratio=stats(part), goal=GOALS[key])


def _point(name: str, p: Obj) -> Row:
    """One server at one load, in absolute numbers (context on a shared machine)."""
    latency = f"; p50 {p['p50_ms']['median']:.1f} ms, p99 {p['p99_ms']['median']:.1f} ms"
    return Row(BENCHMARK, f"{name}: req/s (and latency medians), absolute",
               ours=stats(p["rps"], digits=0, unit=" req/s", detail=latency))


def rows(r: Obj) -> list[Row]:
    return [*(_ratio_row(key, r.get(key)) for key in WHAT), *(_point(k, p) for k, p in r["points"].items())]


def facts(r: Obj) -> list[str]:
    return [f"model {r['model']}", f"KServe: {r.get('kserve', 'not installed')}"]


SECTION = Section(BENCHMARK, "Inference server (CPU)", GOALS, rows, facts)
