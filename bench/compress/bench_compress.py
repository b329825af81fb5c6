"""Compression benchmark: each compressed model against its fp32 original in the same process,
interleaved (A B A B ..., or A B C for three models, >= 5 rounds) at one fixed thread count; median
ratio and its min-max.

1. dynamic int8 (eager back end) on a BERT-like encoder built from our own transformer `Block`
   (4 layers, d 768, 12 heads, FFN 3072, seq 128): speed at batch 1 and 8 and Linear weights size;
   the metric drop is measured on the same encoder code trained briefly on a task built from our own
   digits data (each 2x2 patch of an image is one token; accuracy on the held-out split), with every
   Linear in int8 and, as a variant, with the classifier head kept in fp32;
2. torchao int8 on the same encoder, eager and under torch.compile, timed in the same rounds as the
   eager back end (their ratio is the goal); a torchao back end slower than fp32 is flagged (a goal,
   a warning in the results and on stderr, with the cause where it is known: a CPU without
   AVX512-VNNI runs torch's int8 matmul as a scalar loop);
3. static int8 on a CNN where convolutions dominate (conv+bn+relu stacks with stride-2 downsampling,
   trained on digits): accuracy drop on the digits split, speed on 64x64 and 224x224 images, against fp32 with
   BatchNorm folded into the convolutions (the fastest fp32 eager form); and the trained digits CNN of
   our model family through the compression pipeline;
4. structured pruning of the encoder: 50 % of FFN width, and 50 % of attention heads;
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from kubeforge_api.compression import CompressionSpec
from kubeforge_trainer.compress import prune
from kubeforge_trainer.compress.pipeline import run
from kubeforge_trainer.data import digits
from kubeforge_trainer.models import Block, TokenEmbedding
from kubeforge_trainer.variants import encoded, weights_bytes
from kubeforge_trainer.variants.quantize import (
    EagerBackend,
    TorchaoBackend,
    int_mm_fast,
    package_version,
    slow_int8_cause,
)
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


def encoder(layers: int = 4, dim: int = 768, heads: int = 12, vocab: int = 81, seq: int = 128,
            classes: int = 10) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(TokenEmbedding(vocab, dim, seq), *[Block(dim, heads) for _ in range(layers)],
                         Pooled(dim, classes)).eval()


def patch_tokens(x: torch.Tensor) -> torch.Tensor:
    """8x8 digits in [0, 1] -> 16 tokens: each 2x2 patch at 3 grey levels is one of 81 ids (finer
    levels make rare tokens that the encoder memorises instead of generalising)."""
    q = (x.reshape(-1, 4, 2, 4, 2) * 2).round().long().permute(0, 1, 3, 2, 4).reshape(-1, 16, 4)
    return ((q[..., 0] * 3 + q[..., 1]) * 3 + q[..., 2]) * 3 + q[..., 3]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int = 32) -> float:
    """AdamW with one-cycle rate, bf16 autocast (fp32 weights); returns seconds spent."""
    start, gen = time.perf_counter(), torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x[idx]).float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
    model.eval()
    return time.perf_counter() - start


def timed(fn: Callable[[], object], iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def _stats(values: list[float], **extra: float) -> Obj:
    return {"ratio_median": statistics.median(values), "ratio_min": min(values), "ratio_max": max(values),
            "rounds": len(values), **extra}


@torch.inference_mode()
def interleaved(models: list[Callable[[torch.Tensor], object]], x: torch.Tensor, rounds: int) -> list[list[float]]:
    """Seconds per forward of each model, one timing of each per round (A B C A B C ...), after
    3 warm-up calls each; every model runs about 0.2 s per timing (its own iteration count)."""
    for m in models:
        for _ in range(3):
            m(x)
    iters = [max(1, int(0.2 / max(timed(lambda m=m: m(x), 1), 1e-4))) for m in models]  # type: ignore[misc]
    out: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, m in enumerate(models):
            out[i].append(timed(lambda m=m: m(x), iters[i]))  # type: ignore[misc]
    return out


def speedups(times: list[list[float]]) -> list[Obj]:
    """Per-round fp32 time / each other model's time (models[0] is fp32)."""
    base = times[0]
    return [_stats([a / b for a, b in zip(base, t, strict=True)], base_ms=1000 * statistics.median(base),
                   other_ms=1000 * statistics.median(t)) for t in times[1:]]


def ratio(base: nn.Module, other: nn.Module | Callable[[torch.Tensor], object], x: torch.Tensor,
          pairs: int) -> Obj:
    """base time / other time per interleaved pair (> 1: other is faster)."""
    return speedups(interleaved([base, other], x, pairs))[0]


def linear_bytes(state: dict[str, torch.Tensor], prefixes: list[str]) -> int:
    return sum(t.numel() * t.element_size() for k, t in state.items() if any(k.startswith(p) for p in prefixes))


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(-1) == y).float().mean())


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


def encoder_metric(dim: int, heads: int, steps: int) -> Obj:
    """Train the encoder on digits patch tokens; accuracy of fp32, all-Linear int8 and int8 with the
    classifier head in fp32, on the held-out split (points = percent of 360 images)."""
    d = digits()
    model = encoder(dim=dim, heads=heads)
    seconds = fit(model, patch_tokens(d.x_train), d.y_train, steps, lr=1e-3)
    xe = patch_tokens(d.x_eval)
    fp32 = accuracy(model, xe, d.y_eval)
    every = accuracy(EagerBackend().dynamic(copy.deepcopy(model)), xe, d.y_eval)
    head = accuracy(EagerBackend().dynamic(copy.deepcopy(model), keep_fp32=(f"{len(model) - 1}.out",)), xe, d.y_eval)
    return {"dim": dim, "heads": heads, "train_steps": steps, "train_s": seconds, "eval_samples": len(xe),
            "fp32_accuracy": fp32, "int8_accuracy": every, "int8_head_fp32_accuracy": head,
            "drop_points": 100 * (fp32 - every), "drop_points_head_fp32": 100 * (fp32 - head)}


def bench_encoder(pairs: int, metric_dim: int, metric_steps: int) -> Obj:
    out: Obj = {"metric": encoder_metric(metric_dim, max(1, metric_dim // 64), metric_steps)}
    model = encoder()
    x = {b: torch.randint(0, 81, (b, 128), generator=torch.Generator().manual_seed(b)) for b in (1, 8)}
    linears = [f"{n}." for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    fp32_bytes = linear_bytes(model.state_dict(), linears)
    eager = EagerBackend().dynamic(copy.deepcopy(model))
    ao = TorchaoBackend().dynamic(copy.deepcopy(model))
    start = time.perf_counter()
    compiled = TorchaoBackend().serving(ao)  # the product's path: torch.compile with freezing
    with torch.inference_mode():
        for b in (1, 8):
            compiled(x[b])
    compile_s = time.perf_counter() - start
    for b in (1, 8):
        times = interleaved([model, eager, ao, compiled], x[b], pairs)
        dyn, ao_eager, ao_comp = speedups(times)
        out.setdefault("dynamic_int8", {})[f"batch{b}"] = dyn
        out.setdefault("torchao_eager", {})[f"batch{b}"] = ao_eager
        out.setdefault("torchao_compiled", {})[f"batch{b}"] = ao_comp
        out.setdefault("torchao_vs_eager", {})[f"batch{b}"] = _stats(
            [e / c for e, c in zip(times[1], times[3], strict=True)])
    out["dynamic_int8"]["linear_size_ratio"] = fp32_bytes / linear_bytes(encoded(eager, "int8-dynamic", "eager"),
                                                                         linears)
    out["torchao_compiled"]["compile_s"] = compile_s
    out["torchao_int_mm_fast"] = int_mm_fast()
    slow = [f"{form} batch {b}" for form in ("torchao_eager", "torchao_compiled") for b in (1, 8)
            if out[form][f"batch{b}"]["ratio_max"] < 1.0]
    if slow:  # off the fast path: say so beside the numbers, not only in a ratio below one
        out["torchao_warning"] = (f"torchao int8 is slower than fp32 ({', '.join(slow)}); "
                                  f"{slow_int8_cause('torchao')}")
        print(f"warning: {out['torchao_warning']}", file=sys.stderr, flush=True)
    out.update(bench_prune(model, x, pairs))
    return out


def bench_prune(model: nn.Module, x: dict[int, torch.Tensor], pairs: int) -> Obj:
    out: Obj = {}
    for name, parts in (("prune_ffn_50", ("units",)), ("prune_heads_50", ("heads",))):
        pruned = copy.deepcopy(model)
        prune.structured(pruned, {"model": "gpt"}, 0.5, parts)
        times = {b: speedups(interleaved([model, pruned], x[b], pairs))[0] for b in (1, 8)}
        out[name] = {"batch1": times[1], "batch8": times[8],
                     "parameters_ratio": sum(p.numel() for p in model.parameters()) / sum(
                         p.numel() for p in pruned.parameters()),
                     "size_ratio": len(weights_bytes(encoded(model, "fp32", ""))) / len(
                         weights_bytes(encoded(pruned, "fp32", "")))}
    return out


def conv_net(channels: tuple[int, ...] = (32, 64, 64, 128, 128), classes: int = 10) -> nn.Sequential:
    """conv(3x3)+bn+relu stacks, stride 2 where the width grows past 32, global average pool, one
    Linear: convolutions are nearly all of the work (ResNet-like, no residuals: eager static int8
    quantizes a Sequential)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 1
    for i, c in enumerate(channels):
        stride = 2 if i in (1, 3) else 1
        layers += [nn.Conv2d(width, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        width = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


def folded(model: nn.Sequential) -> nn.Module:
    """The fp32 model with each BatchNorm folded into its convolution (and ReLU fused): the fair
    fp32 baseline, since int8 gets the same folding."""
    from kubeforge_trainer.variants.quantize import fusable
    from torch.ao.quantization import fuse_modules

    out: nn.Module = fuse_modules(copy.deepcopy(model).eval(), fusable(model))  # type: ignore[no-untyped-call]
    return out


IMAGE_SIDES = (64, 224)  # the per-call int8 costs (quantize, dequantize, allocation) weigh most at 64


def images(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, 1, 8, 8)


def bench_cnn(pairs: int, threads: int, steps: int) -> Obj:
    d = digits()
    model = conv_net()
    seconds = fit(model, images(d.x_train), d.y_train, steps, lr=3e-3, batch=64)
    static = EagerBackend().static(copy.deepcopy(model), images(d.x_train[:256]))
    xe, fp32 = images(d.x_eval), folded(model)
    out: Obj = {"engine": torch.backends.quantized.engine, "train_steps": steps, "train_s": seconds,
                "fp32_accuracy": accuracy(fp32, xe, d.y_eval), "int8_accuracy": accuracy(static, xe, d.y_eval)}
    out["drop_points"] = 100 * (out["fp32_accuracy"] - out["int8_accuracy"])
    for side in IMAGE_SIDES:
        x = torch.rand(8, 1, side, side, generator=torch.Generator().manual_seed(1))
        for b in (1, 8):
            folded_t, int8_t, unfolded_t = interleaved([fp32, static, model], x[:b], pairs)
            out.setdefault(f"{side}px", {})[f"batch{b}"] = speedups([folded_t, int8_t])[0]
            out[f"{side}px"][f"batch{b}_vs_unfolded"] = speedups([unfolded_t, int8_t])[0]
    out["size_ratio"] = len(weights_bytes(encoded(fp32, "fp32", ""))) / len(
        weights_bytes(encoded(static, "int8-static", "eager")))
    digits_cnn = train({"model": "cnn", "dataset": "digits", "epochs": 8, "batchSize": 64, "learningRate": 0.01})
    report = pipeline(digits_cnn, [{"quantize": {"mode": "static"}}], threads)
    out["family_cnn_digits"] = {"fp32": report["baseline"]["metric"],
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--metric-dim", type=int, default=256, help="width of the encoder trained for the metric")
    parser.add_argument("--metric-steps", type=int, default=250, help="training steps of that encoder")
    parser.add_argument("--cnn-steps", type=int, default=300, help="training steps of the conv net (digits)")
    parser.add_argument("--only", choices=["encoder", "encoder_d768_metric", "static_cnn", "distill"], action="append",
                        help="run these sections only (repeat)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compress.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sections: dict[str, Callable[[], Obj]] = {
        "encoder": lambda: bench_encoder(args.pairs, args.metric_dim, args.metric_steps),
        # the metric on the encoder whose speed is measured (d 768): ~7 min of training on 2 cores
        "encoder_d768_metric": lambda: encoder_metric(768, 12, args.metric_steps),
        "static_cnn": lambda: bench_cnn(args.pairs, args.threads, args.cnn_steps),
        "distill": lambda: bench_distill(args.pairs, args.threads)}
    result: Obj = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    result["machine"] = (f"{os.cpu_count()}-core CPU ({'with' if int_mm_fast() else 'without'} AVX512-VNNI int8 "
                         f"matmul), torch {torch.__version__}, torchao {package_version('torchao')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(sections):
        result[name] = {**sections[name](), "threads": args.threads}
        result["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")  # when last written: the report shows it
        args.out.write_text(json.dumps(result, indent=2))  # each section as soon as it is measured
        print(name, json.dumps(result[name]), flush=True)


if __name__ == "__main__":
    main()
