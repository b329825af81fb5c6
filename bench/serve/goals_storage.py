"""What the storage benchmark (bench_storage.py) compares, and the goal of each comparison: its section of
docs/benchmarks.md, read from bench/results/storage.json. Ratios are the storage initializer's throughput
over the host copy's (the same S3 client in one process), per round."""

from __future__ import annotations

from bench.rows import Bound, Goal, Obj, Row, Section, stats

BENCHMARK = "storage"
GOALS = {"init_vs_host": Goal(ratio=Bound(">=", 0.8, "x"))}
INIT = "storage initializer (`fetch` in its own process, as the init container runs it)"


def _mbps(name: str, p: Obj) -> str:
    return f"{name} {p['mb_per_s']['median']:.0f} MB/s ({p['seconds']['median']:.2f} s)"


def _part(r: Obj, size: str, goal: bool) -> list[Row]:
    p = r["points"]
    return [
        Row(BENCHMARK, f"{INIT} vs the same S3 client copying in this process, {size}: throughput",
            baseline=_mbps("host", p["host"]), ours=_mbps("init", p["init"]), ratio=stats(r["init_vs_host"]),
            goal=GOALS["init_vs_host"] if goal else None),
        Row(BENCHMARK, f"the same with `--digest` (the copy hashed and checked), {size}",
            baseline=_mbps("host", p["host"]), ours=_mbps("init", p["init_digest"]),
            ratio=stats(r["init_digest_vs_host"])),
        Row(BENCHMARK, f"what `--digest` adds, {size}", ours=stats(r["digest_seconds"], digits=2, unit=" s")),
        Row(BENCHMARK, f"{INIT} vs the host copy in a process of its own, {size}",
            baseline=_mbps("host", p["host_process"]), ours=_mbps("init", p["init"]),
            ratio=stats(r["init_vs_host_process"])),
        Row(BENCHMARK, f"the initializer's command called in this process vs the host copy, {size}",
            baseline=_mbps("host", p["host"]), ours=_mbps("init", p["init_in_process"]),
            ratio=stats(r["init_in_process_vs_host"])),
        Row(BENCHMARK, f"what a process start costs (the host copy in its own process less in this one), {size}",
            ours=stats(r["process_start_seconds"], digits=2, unit=" s")),
    ]


def rows(r: Obj) -> list[Row]:
    large = r.get("large")
    return [*_part(r, _size(r), True), *(_part(large, _size(large), False) if large else [])]


def _size(r: Obj) -> str:
    return f"{r['bytes'] / 2**20:.0f} MiB"


def facts(r: Obj) -> list[str]:
    return [f"model {r['model']}", f"boto3 {r['boto3']}"]


SECTION = Section(BENCHMARK, "Storage initializer (S3 copy)", GOALS, rows, facts, notes="serve/NOTES-storage.md")
