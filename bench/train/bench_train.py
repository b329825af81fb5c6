"""Trainer benchmark, side by side and interleaved (A B A B) on this machine:

1. our trainer vs a hand-written loop (bench/train/handwritten.py), same model, data order,
   optimizer and threads, at ~1 ms and >= 10 ms steps; losses must agree to 1e-5;
2. our DDP vs hand-written DDP under the same torchrun (2 ranks, gloo);
3. our FSDP vs our DDP on a model that fits DDP;
4. CPU MFU: the trainer's achieved FLOP/s over an fp32 matmul ceiling measured in the same run.

Throughput is steps/s, the median over 8 equal slices of the logged steps (the last logged step,
which includes the final evaluation, left out). Each part is merged into bench/results/train.json as soon as it finishes
(a failed part is recorded as an error and the others still run); `--only` re-runs some parts."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.constants import Env
from kubeforge_trainer.train.cpus import threads_per_rank

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = str(Path(sys.executable).parent / "torchrun")
Obj = dict[str, Any]
WINDOWS = 8


def job(strategy: str, procs: int, steps: int, **recipe: Any) -> Obj:
    base = {"model": "mlp", "dataset": "synthetic", "epochs": 1, "maxSteps": steps, "optimizer": "sgd",
            "lrSchedule": "constant", "learningRate": 0.01}
    return {"strategy": strategy, "nodes": 1, "procsPerNode": procs, "recipe": {**base, **recipe},
            "checkpoint": {"intervalSteps": 10_000_000, "keep": 1}}


def start(spec: Obj, procs: int, script: list[str]) -> tuple[subprocess.Popen[str], str]:
    storage = tempfile.mkdtemp(prefix="kf-bench-")
    body = {k: v for k, v in spec.items() if k != "env"}  # "env": extra variables for both sides, not the spec
    env = {**os.environ, "KUBEFORGE_SPEC": json.dumps(body), "KUBEFORGE_STORAGE_DIR": storage,
           "KUBEFORGE_PROGRESS_PORT": "0", **spec.get("env", {})}
    cmd = [TORCHRUN, "--standalone", f"--nproc-per-node={procs}", *script] if procs > 1 else [sys.executable, *script]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), storage


def finish(proc: subprocess.Popen[str], storage: str, script: list[str]) -> str:
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(out[-2000:] + err[-2000:])
    return storage if script[0] == "-m" else out


def launch(spec: Obj, procs: int, script: list[str]) -> str:
    return finish(*start(spec, procs, script), script)


OURS = ["-m", "kubeforge_trainer", "train"]
HANDWRITTEN = [str(REPO / "bench" / "train" / "handwritten.py")]


def ours_points(storage: str) -> tuple[list[int], list[float], list[float]]:
    """(steps, wall times, losses) of the trainer's logged train points."""
    rows = [json.loads(line) for line in (Path(storage) / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    return [r["step"] for r in train], [r["time"] for r in train], [r["loss"] for r in train]


def baseline_points(out: str) -> tuple[list[int], list[float], list[float]]:
    res = json.loads(out.strip().splitlines()[-1])
    return [(i + 1) * res["logEvery"] for i in range(len(res["times"]))], res["times"], res["losses"]


def rate_between(steps: list[int], times: list[float], t0: float, t1: float) -> float:
    """Steps/s over the wall-clock window [t0, t1] (logged points inside it)."""
    inside = [(s, t) for s, t in zip(steps[:-1], times[:-1], strict=True) if t0 <= t <= t1]
    (s0, a), (s1, b) = inside[0], inside[-1]
    return (s1 - s0) / (b - a)


def concurrently(spec: Obj) -> tuple[float, list[float], list[float]]:
    """Trainer and hand-written loop at the same time (one thread each on the 2 cores): both see the
    same neighbours' load, so their rates over the wall-clock window where both train compare
    fairly on a shared machine. Returns (ratio, trainer losses, loop losses)."""
    a, b = start(spec, 1, OURS), start(spec, 1, HANDWRITTEN)
    sa, ta, la = ours_points(finish(*a, OURS))
    sb, tb, lb = baseline_points(finish(*b, HANDWRITTEN))
    t0, t1 = max(ta[0], tb[0]), min(ta[-2], tb[-2])
    if t1 - t0 < 2.0:
        raise RuntimeError(f"the two runs overlapped only {t1 - t0:.1f} s: give them more steps")
    return rate_between(sa, ta, t0, t1) / rate_between(sb, tb, t0, t1), la, lb


def side_by_side_concurrent(name: str, spec: Obj, rounds: int) -> Obj:
    ratios, losses_equal = [], True
    for _ in range(rounds):
        ratio, la, lb = concurrently(spec)
        ratios.append(ratio)
        n = min(len(la), len(lb))
        losses_equal &= max(abs(x - y) for x, y in zip(la[:n], lb[:n], strict=True)) <= 1e-5
        print(f"{name}: concurrent ratio {ratio:.3f}", flush=True)
    return {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "rounds": rounds, "ratios": ratios, "losses_equal_1e-5": losses_equal,
            "method": "both at once, one thread each, rates over the window where both train"}


def windowed_rate(steps: list[int], times: list[float], windows: int = WINDOWS) -> float:
    """Steps/s as the median over `windows` equal slices of the logged points (the last point,
    which includes the final evaluation, left out): a burst of another tenant's load on this
    shared machine spoils one slice, not the whole run."""
    steps, times = steps[:-1], times[:-1]
    per = max(1, (len(steps) - 1) // windows)
    rates = [(steps[j + per] - steps[j]) / (times[j + per] - times[j]) for j in range(0, len(steps) - per, per)]
    return statistics.median(rates)


def ours(spec: Obj, procs: int) -> tuple[float, list[float]]:
    storage = Path(launch(spec, procs, ["-m", "kubeforge_trainer", "train"]))
    rows = [json.loads(line) for line in (storage / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    return windowed_rate([r["step"] for r in train], [r["time"] for r in train]), [r["loss"] for r in train]


def baseline(spec: Obj, procs: int) -> tuple[float, list[float]]:
    out = launch(spec, procs, [str(REPO / "bench" / "train" / "handwritten.py")])
    res = json.loads(out.strip().splitlines()[-1])
    t, every = res["times"], res["logEvery"]
    return windowed_rate([(i + 1) * every for i in range(len(t))], t), res["losses"]


def matmul_ceiling(n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def side_by_side(name: str, a: Any, b: Any, rounds: int, compare_losses: bool = True) -> Obj:
    ratios, losses_equal = [], True
    for _ in range(rounds):
        ra, la = a()
        rb, lb = b()
        ratios.append(ra / rb)
        n = min(len(la), len(lb))
        losses_equal &= max(abs(x - y) for x, y in zip(la[:n], lb[:n], strict=True)) <= 1e-5
        print(f"{name}: {ra:.1f} vs {rb:.1f} steps/s -> {ra / rb:.3f}", flush=True)
    result: Obj = {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                   "rounds": rounds, "ratios": ratios}
    if compare_losses:
        result["losses_equal_1e-5"] = losses_equal
    return result


def save_part(out: Path, key: str, value: Obj) -> None:
    """Merge one finished part into the results file at once (atomically), so a later part that
    fails never loses it; a failed part is recorded as {"error": ...}."""
    results: Obj = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = f"{os.cpu_count()}-core CPU, torch {torch.__version__}"
    results[key] = {**value, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out)


def mfu(large: Obj, rounds: int) -> Obj:
    """CPU MFU: forward+backward FLOPs of the large MLP (6 x params per sample) at our measured rate."""
    params = 32 * 1024 + 1024 * 1024 * 2 + 1024 * 4 + 3 * 1024 + 4
    mfus = []
    for _ in range(rounds):
        ceiling = matmul_ceiling()
        rate, _ = ours(large, 1)
        mfus.append(rate * 512 * 6 * params / ceiling)
    return {"median": statistics.median(mfus), "min": min(mfus), "max": max(mfus)}


def parts(rounds: int) -> dict[str, Callable[[], Obj]]:
    # One thread on both sides for the tiny model: on a shared 2-core machine two spinning OpenMP
    # threads per ~1 ms step turn every neighbour's burst into a 10x slower step, hiding the overhead.
    small = {**job("ddp", 1, 2400, batchSize=64, modelConfig={"hidden": 64, "samples": 262144}),
             "env": {str(Env.CPU_LIMIT_MILLICORES): "1000"}}
    small_long = {**job("ddp", 1, 12000, batchSize=64, modelConfig={"hidden": 64, "samples": 1048576}),
                  "env": small["env"]}  # ~12 s of steps: the trainer starts a few seconds after the loop
    large = job("ddp", 1, 80, batchSize=512, modelConfig={"hidden": 1024, "layers": 3, "samples": 65536})
    ddp = job("ddp", 2, 60, batchSize=512, modelConfig={"hidden": 1024, "layers": 3, "samples": 65536})
    fsdp = {**ddp, "strategy": "fsdp"}
    return {
        "trainer_vs_loop_1ms": lambda: side_by_side("1ms", lambda: ours(small, 1), lambda: baseline(small, 1), rounds),
        "trainer_vs_loop_1ms_concurrent": lambda: side_by_side_concurrent("1ms-concurrent", small_long, rounds),
        "trainer_vs_loop_10ms": lambda: side_by_side("10ms", lambda: ours(large, 1), lambda: baseline(large, 1),
                                                     rounds),
        "ddp_vs_handwritten_ddp": lambda: side_by_side("ddp", lambda: ours(ddp, 2), lambda: baseline(ddp, 2), rounds),
        "fsdp_vs_ddp": lambda: side_by_side("fsdp", lambda: ours(fsdp, 2), lambda: ours(ddp, 2), rounds,
                                            compare_losses=False),
        "cpu_mfu_vs_matmul_ceiling": lambda: mfu(large, rounds),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="run only these parts (keys of the results file)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "train.json"))
    args = ap.parse_args()
    torch.set_num_threads(threads_per_rank())
    out, failed = Path(args.out), []
    for key, measure in parts(args.rounds).items():
        if args.only and key not in args.only:
            continue
        try:
            value = measure()
        except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError, OSError) as e:
            failed.append(key)
            value = {"error": f"{type(e).__name__}: {str(e)[-1500:]}"}
        save_part(out, key, value)
        print(f"{key}: {json.dumps(value)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
