"""What the Hugging Face serving benchmark (bench_serve_hf.py) compares, and the goal of each comparison:
its section of docs/benchmarks.md, read from bench/results/serve_hf.json. Ratios are ours over KServe's
Python model server's, per round; what our batcher did and the model alone in-process explain them."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, stats

BENCHMARK = "serve_hf"
GOALS = {
    "throughput_c32_vs_kserve": Goal(ratio=Bound(">=", 3.0, "x")),
    "p99_c32_vs_kserve": Goal(ratio=Bound("<=", 1.0)),
}
CONTEXT = {
    "p50_c32_vs_kserve": "p50 at 32 clients vs KServe",
    "per_cpu_throughput_c32_vs_kserve": "requests per server CPU-second at 32 clients vs KServe",
    "throughput_c1_vs_kserve": "req/s at 1 client vs KServe",
    "p50_c1_vs_kserve": "p50 at 1 client vs KServe",
}


def _rps(name: str, p: Obj) -> str:
    return f"{name} {p['rps']['median']:.0f} req/s"


def _ms(name: str, p: Obj, key: str) -> str:
    return f"{name} {p[key]['median']:.1f} ms"


def _goal_rows(r: Obj) -> list[Row]:
    ours, kserve = r["points"]["ours_c32"], r["points"]["kserve_c32"]
    return [
        Row(BENCHMARK, "req/s at 32 clients (one short text each) vs KServe's Python model server, same model and "
            "tokenizer", baseline=_rps("KServe", kserve), ours=_rps("ours", ours),
            ratio=stats(r["throughput_c32_vs_kserve"]), goal=GOALS["throughput_c32_vs_kserve"]),
        Row(BENCHMARK, "p99 at 32 clients vs KServe", baseline=_ms("KServe", kserve, "p99_ms"),
            ours=_ms("ours", ours, "p99_ms"), ratio=stats(r["p99_c32_vs_kserve"]), goal=GOALS["p99_c32_vs_kserve"]),
    ]


def _batcher(p: Obj) -> Row:
    """What our batcher did at 32 clients (from the server's /metrics over each point)."""
    detail = (f"; model {p['model_ms_per_batch']['median']:.1f} ms per batch, busy "
              f"{100 * p['model_busy']['median']:.0f} % of the time, queue wait {p['queue_ms_mean']['median']:.1f} ms")
    return Row(BENCHMARK, "our batcher at 32 clients: rows per model call (and model time)",
               ours=stats(p["mean_batch"], digits=1, unit=" rows", detail=detail))


def _alone(a: Obj) -> Row:
    """The model in-process: the 32 texts as one padded batch vs one at a time (tokenizing included), and
    where the batch's time goes."""
    tokens = a["tokens_per_text"]
    where = ""
    if "tokenizer_share_of_batch32" in a:
        where = (f"; tokenizer {100 * a['tokenizer_share_of_batch32']['median']:.0f} % of its time, padding "
                 f"{100 * a['padding_share_of_batch32']:.0f} % of its positions")
    return Row(BENCHMARK, f"the model alone in-process, 32 texts ({tokens['min']}-{tokens['max']} tokens) as one "
               "padded batch vs one at a time: the most batching can give",
               baseline=f"{a['batch1_rows_per_s']['median']:.0f} texts/s",
               ours=f"{a['batch32_rows_per_s']['median']:.0f} texts/s{where}", ratio=stats(a["batch32_vs_batch1"],
                                                                                         unit="x"))


def _point(name: str, p: Obj) -> Row:
    latency = f"; p50 {p['p50_ms']['median']:.1f} ms, p99 {p['p99_ms']['median']:.1f} ms"
    cpu = f", {p['cpu_ms_per_request']['median']:.2f} CPU-ms per request"
    return Row(BENCHMARK, f"{name}: req/s (and latency medians), absolute",
               ours=stats(p["rps"], digits=0, unit=" req/s", detail=latency + cpu))


def rows(r: Obj) -> list[Row]:
    return [*_goal_rows(r), *(Row(BENCHMARK, what, ratio=stats(r[key])) for key, what in CONTEXT.items()),
            _batcher(r["points"]["ours_c32"]), _alone(r["model_alone"]),
            *(_point(k, p) for k, p in r["points"].items())]


def facts(r: Obj) -> list[str]:
    s = r["ours_settings"]
    return [f"model {r['model']}", f"ours: maxBatchSize {s['max_batch_size']}, maxDelayMs {s['max_delay_ms']}",
            f"KServe: {r.get('kserve', 'not installed')}"]


SECTION = Section(BENCHMARK, "Serving a Hugging Face text classifier vs KServe (CPU)", GOALS, rows, facts,
                  notes="serve/NOTES-hf.md")
