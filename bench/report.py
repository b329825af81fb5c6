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


TRAINER_ROWS = [
    ("trainer vs hand-written loop, ~1 ms steps (MLP, batch 64)", "trainer_vs_loop_1ms", 0.97),
    ("trainer vs hand-written loop, ≥ 10 ms steps (MLP 1024x3, batch 512)", "trainer_vs_loop_10ms", 0.97),
    ("our DDP vs hand-written DDP, same torchrun (2 ranks, gloo)", "ddp_vs_handwritten_ddp", 0.97),
    ("our FSDP vs our DDP, model that fits DDP (2 ranks, gloo)", "fsdp_vs_ddp", 0.85),
]


def _operator_section(op: dict[str, Any] | None, date: datetime) -> list[str]:
    """The operator table, or one line saying why it is missing (a failed or partial run loses only itself)."""
    if op is None:
        return ["## Operator (embedded control plane)", "", "Not measured yet: run `make bench`.", ""]
    try:
        lines: list[str] = []
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
        return lines
    except (KeyError, TypeError, ZeroDivisionError) as e:
        return ["## Operator (embedded control plane)", "", f"Results incomplete ({e!r}); rerun `make bench`.", ""]


def _trainer_row(what: str, r: dict[str, Any] | None, goal: float) -> str:
    if r is None or "ratio_median" not in r:
        why = r["error"].splitlines()[0][:160].replace("|", "/") if r and "error" in r else "no result"
        return f"| {what} | not measured ({why}) | — | ≥ {goal} | **not measured** |"
    eq = {True: "yes", False: "**no**"}.get(bool(r["losses_equal_1e-5"]), "—") if "losses_equal_1e-5" in r else "—"
    return f"| {what} | {_ratio(r)} | {eq} | ≥ {goal} | {_met(r['ratio_median'] >= goal)} |"


def _trainer_section(tr: dict[str, Any] | None) -> list[str]:
    """The trainer table; a part that failed or never ran shows as not measured, the rest still show."""
    if tr is None:
        return ["## Trainer (CPU)", "", "Not measured yet: run `make bench` (bench/train/bench_train.py).", ""]
    dates = sorted({str(v["date"]) for v in tr.values() if isinstance(v, dict) and "date" in v})
    undated = [k for _, k, _ in TRAINER_ROWS if isinstance(tr.get(k), dict) and "date" not in tr[k]]
    when = ", ".join(dates) or "before per-part dates"
    when += f" (undated rows: {', '.join(undated)}, from an earlier run)" if dates and undated else ""
    lines = ["## Trainer (CPU)", "", f"Machine: {tr.get('machine', 'unknown')}; measured {when}.",
             "", "| what | ratio (median, spread) | losses equal to 1e-5 | goal | verdict |",
             "| --- | --- | --- | --- | --- |"]
    lines += [_trainer_row(what, tr.get(key), goal) for what, key, goal in TRAINER_ROWS]
    mfu = tr.get("cpu_mfu_vs_matmul_ceiling")
    what = ("CPU MFU: trainer FLOP/s (6 x params x samples/s) over an fp32 1024² matmul ceiling measured in the "
            "same run")
    if mfu and "median" in mfu:
        lines.append(f"| {what} | {mfu['median']:.2f} ({mfu['min']:.2f}-{mfu['max']:.2f}) | — | ≥ 0.60 | "
                     f"{_met(mfu['median'] >= 0.6)} |")
    else:
        lines.append(f"| {what} | not measured | — | ≥ 0.60 | **not measured** |")
    notes = REPO / "bench" / "train" / "NOTES.md"
    return [*lines, "", *([notes.read_text().strip(), ""] if notes.exists() else [])]


def main() -> None:
    date = datetime.fromtimestamp(max((p.stat().st_mtime for p in RESULTS.glob("*.json")), default=0), UTC)
    lines = ["# Benchmarks", "",
             "Every number is a ratio measured side by side in one run (interleaved A B A B) on the same machine;",
             "absolute times on these 2-core machines are context only. Regenerate with `make bench`.", ""]
    lines += _operator_section(_load("operator"), date)
    lines += _trainer_section(_load("train"))
    gpu = _load("gpu")
    lines += ["## GPU", ""]
    if gpu:
        lines += [f"{gpu['device']}: trainer vs raw bf16 loop {gpu['trainer_vs_raw_loop_median']:.3f}, MFU "
                  f"{gpu['mfu_median']:.2f} of a measured {gpu['bf16_matmul_tflops']:.0f} TFLOP/s bf16 matmul.", ""]
    else:
        lines += ["Not measured yet: no accelerator was available. `bench/gpu.sh` is ready (bf16, raw loop vs trainer, "
                  "MFU) and writes bench/results/gpu.json.", ""]
    (REPO / "docs" / "benchmarks.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
