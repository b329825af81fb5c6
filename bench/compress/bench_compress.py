"""Compression benchmark: each compressed model against its fp32 original in the same process,
interleaved A B A B (>= 5 pairs) at a fixed thread count; median ratio and its min-max.

1. dynamic int8 (eager back end) on a BERT-like encoder built from our own transformer `Block`
   (4 layers, d 768, 12 heads, FFN 3072, seq 128, random weights: nothing is downloaded): speed at
   batch 1 and 8, Linear weights size, and top-1 agreement with fp32 on a mean-pooled classifier head
   (the "metric drop" of a model without a trained task: 100 % minus agreement);
2. torchao int8 on the same encoder, eager and under torch.compile (fp32 eager is the baseline);
3. static int8 on a CNN of our family (32 channels, 3x64x64 images) for speed and size; accuracy drop
   on the trained digits CNN through the compression pipeline;
4. structured pruning of 50 % FFN width of the encoder;
5. distillation: a half-depth GPT student of a trained 4-block GPT teacher (text), metric kept and speed.
Writes bench/results/compress.json."""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.compression import CompressionSpec
from kubeforge_trainer.compress import prune
from kubeforge_trainer.compress.pipeline import run
from kubeforge_trainer.compress.quantize import EagerBackend, TorchaoBackend
from kubeforge_trainer.compress.variants import encoded, weights_bytes
from kubeforge_trainer.models import Block, TokenEmbedding, build
from torch import nn

REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


class Pooled(nn.Module):
    """Mean-pooled classifier head (BERT-like sequence classification)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.ln, self.out = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(self.ln(x).mean(dim=1))
        return out


def encoder(layers: int = 4, dim: int = 768, heads: int = 12, vocab: int = 8192, seq: int = 128) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(TokenEmbedding(vocab, dim, seq), *[Block(dim, heads) for _ in range(layers)],
                         Pooled(dim, 8)).eval()


def timed(fn: Callable[[], object], iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


@torch.inference_mode()
def ratio(base: nn.Module, other: nn.Module | Callable[[torch.Tensor], object], x: torch.Tensor,
          pairs: int) -> Obj:
    """base time / other time per interleaved pair (> 1: other is faster)."""
    for _ in range(3):
        base(x)
        other(x)
    iters = max(1, int(0.2 / max(timed(lambda: base(x), 1), 1e-4)))
    ratios, tb, to = [], [], []
    for _ in range(pairs):
        a = timed(lambda: base(x), iters)
        b = timed(lambda: other(x), iters)
        ratios.append(a / b)
        tb.append(a * 1000)
        to.append(b * 1000)
    return {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "rounds": pairs, "base_ms": statistics.median(tb), "other_ms": statistics.median(to)}


def linear_bytes(state: dict[str, torch.Tensor], prefixes: list[str]) -> int:
    return sum(t.numel() * t.element_size() for k, t in state.items() if any(k.startswith(p) for p in prefixes))


@torch.inference_mode()
def agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    return float((a(x).argmax(-1) == b(x).argmax(-1)).float().mean())


def train(recipe: Obj) -> Path:
    storage = Path(tempfile.mkdtemp(prefix="kf-bench-compress-"))
    env = {**os.environ, "KUBEFORGE_SPEC": json.dumps({"recipe": recipe}), "KUBEFORGE_STORAGE_DIR": str(storage),
           "KUBEFORGE_PROGRESS_PORT": "0"}
    out = subprocess.run([sys.executable, "-m", "kubeforge_trainer", "train"], env=env, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    return storage


def pipeline(storage: Path, methods: list[Obj], threads: int) -> Obj:
    spec = CompressionSpec.model_validate({"methods": methods, "select": "best", "accuracyBudget": {"maxDrop": 1.0}})
    return run(storage / "artifact", spec, storage / "compressed", storage, threads).report.dump()


def bench_encoder(pairs: int) -> Obj:
    model = encoder()
    x = {b: torch.randint(0, 8192, (b, 128), generator=torch.Generator().manual_seed(b)) for b in (1, 8)}
    probe = torch.randint(0, 8192, (64, 128), generator=torch.Generator().manual_seed(99))
    linears = [f"{n}." for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    fp32_bytes = linear_bytes(model.state_dict(), linears)
    eager = EagerBackend().dynamic(copy.deepcopy(model))
    out: Obj = {"dynamic_int8": {
        "batch1": ratio(model, eager, x[1], pairs), "batch8": ratio(model, eager, x[8], pairs),
        "linear_size_ratio": fp32_bytes / linear_bytes(encoded(eager, "int8-dynamic", "eager"), linears),
        "top1_agreement": agreement(model, eager, probe)}}
    ao = TorchaoBackend().dynamic(copy.deepcopy(model))
    out["torchao_eager"] = {"batch1": ratio(model, ao, x[1], pairs), "batch8": ratio(model, ao, x[8], pairs)}
    start = time.perf_counter()
    compiled = torch.compile(ao)
    with torch.inference_mode():
        for b in (1, 8):
            compiled(x[b])
    out["torchao_compiled"] = {"batch1": ratio(model, compiled, x[1], pairs),
                               "batch8": ratio(model, compiled, x[8], pairs),
                               "compile_s": time.perf_counter() - start,
                               "top1_agreement": agreement(model, ao, probe)}
    pruned = copy.deepcopy(model)
    prune.structured(pruned, {"model": "gpt"}, 0.5)
    out["prune_ffn_50"] = {"batch1": ratio(model, pruned, x[1], pairs), "batch8": ratio(model, pruned, x[8], pairs),
                           "size_ratio": len(weights_bytes(encoded(model, "fp32", ""))) / len(
                               weights_bytes(encoded(pruned, "fp32", "")))}
    return out


def bench_cnn(pairs: int, threads: int) -> Obj:
    arch = {"model": "cnn", "imageShape": [3, 64, 64], "channels": 32, "numClasses": 10}
    torch.manual_seed(0)
    model = build(arch).eval()
    gen = torch.Generator().manual_seed(1)
    calib = torch.rand(64, 3 * 64 * 64, generator=gen)
    static = EagerBackend().static(copy.deepcopy(model), calib)
    fp32 = len(weights_bytes(encoded(model, "fp32", "")))
    out: Obj = {"batch1": ratio(model, static, calib[:1], pairs), "batch8": ratio(model, static, calib[:8], pairs),
                "size_ratio": fp32 / len(weights_bytes(encoded(static, "int8-static", "eager")))}
    digits = train({"model": "cnn", "dataset": "digits", "epochs": 8, "batchSize": 64, "learningRate": 0.01})
    report = pipeline(digits, [{"quantize": {"mode": "static"}}], threads)
    out["digits_accuracy"] = {"fp32": report["baseline"]["metric"],
                              "int8": report["candidates"][0]["measured"]["metric"],
                              "drop_points": 100 * report["candidates"][0]["drop"]}
    return out


def bench_distill(pairs: int, threads: int) -> Obj:
    recipe = {"model": "gpt", "dataset": "text", "epochs": 1000, "maxSteps": 200, "batchSize": 16,
              "learningRate": 0.003, "modelConfig": {"dim": 96, "heads": 4, "layers": 4, "seqLen": 64}}
    storage = train(recipe)
    report = pipeline(storage, [{"quantize": {"mode": "dynamic"}}, {"distill": {"steps": 200}}], threads)
    from kubeforge_trainer import artifacts

    _, teacher = artifacts.load_model(storage / "artifact")
    _, student = artifacts.load_model(storage / report["candidates"][1]["artifact"]["path"])
    x = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(3))
    base, dyn, dist = report["baseline"]["metric"], report["candidates"][0], report["candidates"][1]
    return {"teacher_perplexity": base, "student_perplexity": dist["measured"]["metric"],
            "metric_kept": base / dist["measured"]["metric"],  # perplexity: lower is better
            "batch1": ratio(teacher, student, x[:1], pairs), "batch8": ratio(teacher, student, x, pairs),
            "gpt_dynamic_int8_perplexity": dyn["measured"]["metric"], "gpt_dynamic_int8_drop": dyn["drop"]}


SECTIONS: dict[str, Callable[[int, int], Obj]] = {
    "encoder": lambda pairs, threads: bench_encoder(pairs), "static_cnn": bench_cnn, "distill": bench_distill}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--only", choices=list(SECTIONS), action="append", help="run these sections only (repeat)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compress.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: Obj = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    result["machine"] = f"{os.cpu_count()}-core CPU, torch {torch.__version__}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(SECTIONS):
        result[name] = {**SECTIONS[name](args.pairs, args.threads), "threads": args.threads}
        args.out.write_text(json.dumps(result, indent=2))  # each section as soon as it is measured
        print(name, json.dumps(result[name]), flush=True)


if __name__ == "__main__":
    main()
