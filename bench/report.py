"""Write docs/benchmarks.md from bench/results/*.json (ratios measured side by side in one run)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return dict(json.loads(path.read_text())) if path.exists() else None


def _ratio(r: dict[str, Any]) -> str:
    return f"{r['ratio_median']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}, n={r['rounds']})"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _calls(calls: dict[str, int]) -> str:
    return f"{sum(calls.values())} ({', '.join(f'{k} {v}' for k, v in sorted(calls.items()))})"


def _dashboard(date: datetime) -> list[str]:
    d = _load("dashboard")
    if not d:
        return []
    o, b, r = d["overview_s"], d["baseline_s"], d["speedup_vs_per_job"]
    calls = sum(d["overview_calls"].values())
    short, long = d["job_page_calls_history_10"], d["job_page_calls_history_200"]
    return [
        "## Dashboard (embedded control plane)", "", f"Machine: {d['machine']}; date {date:%Y-%m-%d}.", "",
        "| what | baseline | result | goal | verdict |", "| --- | --- | --- | --- | --- |",
        f"| overview of {d['jobs']} TrainingJobs (200-point histories), one server-side render (AppTest) | "
        f"per-job reads: list names, then one GET per job ({b['median']:.2f} s) | {o['median']:.2f} s "
        f"({o['min']:.2f}-{o['max']:.2f}); speedup {_ratio(r)} | <= 1 s | {_met(o['median'] <= 1.0)} |",
        f"| the overview's reads alone, from the watch-fed mirrors | plain lists of both kinds, decoded and "
        f"validated ({d['overview_lists_s']['median']:.2f} s: the first render's cost) | "
        f"{d['overview_reads_s']['median']:.3f} s | context | - |",
        f"| API calls per overview refresh | {d['jobs'] + 2} (per-job) | {_calls(d['overview_calls'])} | <= 3, "
        f"none per job | {_met(calls <= 3)} |",
        f"| API calls of a job page, 10-point vs 200-point history | - | {_calls(short)} vs {_calls(long)} | "
        f"bounded, independent of history | {_met(short == long)} |", "",
        "Each job's status carries 4 curves of up to 200 points, so one list of 500 jobs is about 12 MB for the "
        "API server to encode and the dashboard to decode: the dashboard lists each kind once per scope and then "
        "follows watch events (as a client-go informer does), so a refresh reads memory; API calls per refresh "
        "count the lists a refresh issues.", ""]


def main() -> None:
    date = datetime.fromtimestamp(max((p.stat().st_mtime for p in RESULTS.glob("*.json")), default=0), UTC)
    lines = ["# Benchmarks", "",
             "Every number is a ratio measured side by side in one run (interleaved A B A B) on the same machine;",
             "absolute times on these 2-core machines are context only. Regenerate with `make bench`.", ""]
    op = _load("operator")
    if op:
        j = op["jobs_per_s"]
        s, u = op["create_to_pods_ms_single"], op["create_to_pods_ms_under_load"]
        w = op["writes_per_lifecycle"]
        object_writes = sum(v for k, v in w.items() if "events" not in k)
        resync = sum(op["writes_on_noop_resync"].values())
        rss = op["rss_mb_at_jobs"]
        writes = ", ".join(f"{k} {v:.1f}" for k, v in w.items())
        burst = f"{j['rounds']}x{u['n'] // j['rounds']}"
        lines += [
            "## Operator (embedded control plane)", "", f"Machine: {op['machine']}; date {date:%Y-%m-%d}.", "",
            "| what | baseline | result | goal | verdict |", "| --- | --- | --- | --- | --- |",
            f"| jobs/s creating 4-node TrainingJobs until all pods exist | hand-written asyncio client creating "
            f"the same Service + 4 pods directly ({j['baseline_median']:.1f} jobs/s) | "
            f"{j['operator_median']:.1f} jobs/s, ratio {_ratio(j)} | >= 10 jobs/s and >= 0.8x | "
            f"{_met(j['operator_median'] >= 10 and j['ratio_median'] >= 0.8)} |",
            f"| create -> all 4 pods exist, one job at a time | - | p50 {s['p50']:.0f} ms, p99 {s['p99']:.0f} ms "
            f"(n={s['n']}) | p50 <= 100 ms | {_met(s['p50'] <= 100)} |",
            f"| create -> all 4 pods exist, {burst} jobs in bursts | - | p50 {u['p50']:.0f} ms, "
            f"p99 {u['p99']:.0f} ms | context | - |",
            f"| API writes per 2-node job lifecycle (to Succeeded) | pods + services + 3 = 6 | "
            f"{object_writes:.1f} object writes + {w.get('POST events', 0):.1f} events ({writes}) | "
            f"<= 6 (events apart) | {_met(object_writes <= 6)} |",
            f"| writes during a no-op resync (operator restart over {rss['jobs']} settled jobs) | 0 | {resync:.0f} | "
            f"0 | {_met(resync == 0)} |",
            f"| operator RSS with {rss['jobs']} jobs | - | {rss['rss_mb']:.0f} MB | <= 200 MB | "
            f"{_met(rss['rss_mb'] <= 200)} |", ""]
    tr = _load("train")
    if tr:
        mfu = tr["cpu_mfu_vs_matmul_ceiling"]
        rows = [("trainer vs hand-written loop, ~1 ms steps (MLP, batch 64)", "trainer_vs_loop_1ms", 0.90),
                ("trainer vs hand-written loop, ≥ 10 ms steps (MLP 1024x3, batch 512)", "trainer_vs_loop_10ms", 0.97),
                ("our DDP vs hand-written DDP, same torchrun (2 ranks, gloo)", "ddp_vs_handwritten_ddp", 0.97),
                ("our FSDP vs our DDP, model that fits DDP (2 ranks, gloo)", "fsdp_vs_ddp", 0.85)]
        lines += ["## Trainer (CPU)", "", f"Machine: {tr['machine']}; date {date:%Y-%m-%d}.", "",
                  "| what | ratio (median, spread) | losses equal to 1e-5 | goal | verdict |",
                  "| --- | --- | --- | --- | --- |"]
        for what, key, goal in rows:
            r = tr[key]
            eq = {True: "yes", False: "**no**"}.get(r.get("losses_equal_1e-5"), "—")
            lines.append(f"| {what} | {_ratio(r)} | {eq} | ≥ {goal} | {_met(r['ratio_median'] >= goal)} |")
        lines += [f"| CPU MFU: trainer FLOP/s (6 x params x samples/s) over an fp32 1024² matmul ceiling measured in "
                  f"the same run | {mfu['median']:.2f} ({mfu['min']:.2f}-{mfu['max']:.2f}) | — | ≥ 0.60 | "
                  f"{_met(mfu['median'] >= 0.6)} |", ""]
    gpu = _load("gpu")
    lines += [*_dashboard(date), "## GPU", ""]
    if gpu:
        lines += [f"{gpu['device']}: trainer vs raw bf16 loop {gpu['trainer_vs_raw_loop_median']:.3f}, MFU "
                  f"{gpu['mfu_median']:.2f} of a measured {gpu['bf16_matmul_tflops']:.0f} TFLOP/s bf16 matmul.", ""]
    else:
        lines += ["Not measured yet: no accelerator was available. `bench/gpu.sh` is ready (bf16, raw loop vs trainer, "
                  "MFU) and writes bench/results/gpu.json.", ""]
    (REPO / "docs" / "benchmarks.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
