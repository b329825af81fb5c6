"""Int8 of a fine-tuned causal language model, compressed by the compression stage and served by the
generation engine, against fp32 in the same run.

The model is the fine-tuning benchmark's base (bench/train/bench_finetune.py): a Llama of 9 layers,
width 512, about 26.6 M parameters, made from a config with a byte-level BPE tokenizer trained here and
fine-tuned (full, packed) by the trainer on local chat and text data; nothing is downloaded. Held-out
text is new conversations rendered with its chat template and new sentences (other seeds).

1. The forms: one decode step at batch 1 (`DecodeStep`: a token over a KV cache of 127 tokens) of
   fp32, the eager int8 back end (torch.ao dynamic int8 Linear, fbgemm/x86 kernels), torchao's int8
   dynamic-activation and weight-only configs run eagerly (the engine runs the model eagerly: its
   paged attention and changing step shapes are not a compiled graph), interleaved rounds.
2. The compression stage (`quantize: dynamic`, objective latency, accuracyBudget
   maxPerplexityIncrease 0.02): its report's perplexity fp32 vs int8 on the held-out text and its
   decode speed-up at batch 1 (median of per-round ratios, quartiles).
3. Serving: the published variant and the fp32 model, each loaded through the model-format layer and
   run by the generation engine as the server builds it (paged KV cache, greedy), one request at a
   time, interleaved A B A B: single-stream decode tokens/s (tokens after the first over the time
   from the first to the last), and how many greedy tokens int8 and fp32 share.

One torch thread throughout. Writes bench/results/llm_int8.json."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.compression import CompressionReport, CompressionSpec
from kubeforge_api.openai import CompletionRequest
from kubeforge_api.server_settings import ServerSettings
from kubeforge_server.llm import serving
from kubeforge_trainer.compress.evaluate import DecodeStep
from kubeforge_trainer.compress.pipeline import run
from kubeforge_trainer.evaldata import EvalSource
from kubeforge_trainer.formats import Loaded, load
from kubeforge_trainer.variants.quantize import EagerBackend, TorchaoBackend, package_version
from prometheus_client import CollectorRegistry
from torch import nn

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: the fine-tuning benchmark's base model resolves from the root
from bench.train.bench_finetune import cached_base  # noqa: E402
from tests.llm_models import chat_jsonl, sentence  # noqa: E402

Obj = dict[str, Any]
RESULTS = REPO / "bench" / "results" / "llm_int8.json"
BUDGET = 0.02  # accuracyBudget.maxPerplexityIncrease
CONTEXT = 128  # tokens a timed decode step sees (the stage's perplexity window)
PROMPT_TOKENS, NEW_TOKENS = 64, 64  # each serving request
FORM_STEPS = 16  # decode steps per form and round
EVAL_WINDOWS = 64  # held-out windows of CONTEXT tokens the perplexity is taken over
KV_CACHE_BYTES = 64 << 20  # each engine's cache: far more than one request needs


def spread(values: list[float]) -> Obj:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def ratios(base: list[float], other: list[float]) -> Obj:
    """Per-round ratios base / other: median, min-max, every value."""
    r = [b / o for b, o in zip(base, other, strict=True)]
    return {"ratio_median": statistics.median(r), "ratio_min": min(r), "ratio_max": max(r), "rounds": len(r),
            "ratios": r}


def heldout_text(model_dir: Path, path: Path) -> Path:
    """Conversations the model never saw, rendered with its chat template, and new sentences."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    chats = chat_jsonl(path.with_suffix(".jsonl"), 120, seed=101, turns=(1, 4), lead="it is ")
    rendered = [str(tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False))
                for line in chats.read_text().splitlines()]
    rng = random.Random(102)
    path.write_text("".join(rendered) + " ".join(sentence(rng) for _ in range(300)))
    return path


# ------------------------------------------------------------------------------------------ 1. forms

def forms(fp32: nn.Module) -> dict[str, nn.Module]:
    """The int8 forms a causal LM could be served in eagerly, beside fp32."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    weight_only = copy.deepcopy(fp32)
    quantize_(weight_only, Int8WeightOnlyConfig())
    return {"fp32": fp32, "eager_dynamic_int8": EagerBackend().dynamic(copy.deepcopy(fp32)),
            "torchao_dynamic_int8_eager": TorchaoBackend().dynamic(copy.deepcopy(fp32)),
            "torchao_weight_only_int8_eager": weight_only}


@torch.inference_mode()
def step_ms(step: nn.Module, ids: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step(ids)
    return (time.perf_counter() - start) / steps * 1000


def time_forms(fp32: nn.Module, ids: torch.Tensor, rounds: int) -> Obj:
    """ms per decode step at batch 1 of each form, interleaved; ratios are fp32's time over the form's."""
    steps = {name: DecodeStep(model) for name, model in forms(fp32).items()}
    for step in steps.values():
        step_ms(step, ids, 3)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            times[name].append(step_ms(steps[name], ids, FORM_STEPS))
    return {name: {"ms_per_token": spread(t), **ratios(times["fp32"], t)} for name, t in times.items()}


# ------------------------------------------------------------------------------------ 2. the stage

def stage(storage: Path, rounds: int) -> tuple[CompressionReport, Obj]:
    spec = CompressionSpec.model_validate({"methods": [{"quantize": {"mode": "dynamic"}}], "objective": "latency",
                                           "accuracyBudget": {"maxPerplexityIncrease": BUDGET}})
    report = run(storage / "model", spec, storage / "compressed", storage, threads=1, rounds=rounds,
                 eval_data=EvalSource(storage / "heldout.txt", "text", EVAL_WINDOWS)).report
    [cand] = report.candidates
    assert cand.measured is not None and cand.speedup is not None
    s1 = cand.speedup
    assert s1.batch1_spread is not None and s1.batch8_spread is not None
    return report, {
        "verdict": cand.verdict.value, "note": cand.note, "timing": report.timing, "rounds": report.rounds,
        "published": report.artifact.path if report.artifact else None,
        "perplexity": {"fp32": report.baseline.metric, "int8": cand.measured.metric, "increase": cand.drop,
                       "budget": BUDGET, "windows_of_tokens": [EVAL_WINDOWS, CONTEXT]},
        "decode_tokens_per_s": {"fp32": report.baseline.decode_tokens_per_s,
                                "int8": cand.measured.decode_tokens_per_s},
        "speedup_batch1": {"median": s1.batch1, "q1": s1.batch1_spread.low, "q3": s1.batch1_spread.high},
        "speedup_batch8": {"median": s1.batch8, "q1": s1.batch8_spread.low, "q3": s1.batch8_spread.high},
        "size_ratio": cand.size_ratio, "warnings": report.warnings}


# ---------------------------------------------------------------------------------------- 3. serving

async def decode_rate(lm: serving.LanguageModel, prompt: list[int]) -> tuple[float, list[int]]:
    """One greedy request through the engine: decode tokens/s after the first token, and the tokens."""
    request = CompletionRequest(model=lm.name, prompt=prompt, max_tokens=NEW_TOKENS, temperature=0.0,
                                ignore_eos=True)
    gen = lm.generation(request, prompt, time.perf_counter())
    marks: list[tuple[float, int]] = []
    while not gen.done:
        await gen.next_text()
        marks.append((time.perf_counter(), len(gen.text.ids)))
    assert gen.error is None, gen.error
    first = next((t, n) for t, n in marks if n > 0)
    last = marks[-1]
    return (last[1] - first[1]) / (last[0] - first[0]), list(gen.text.ids)


async def serve_side_by_side(models: dict[str, Loaded], prompts: list[list[int]], rounds: int) -> Obj:
    lms = {name: serving.build(loaded, ServerSettings(model_name=name, kv_cache_bytes=KV_CACHE_BYTES),
                               CollectorRegistry()) for name, loaded in models.items()}
    loop = asyncio.get_running_loop()
    for lm in lms.values():
        lm.engine.start(loop)
        await serving.warm_up(lm)
    rates: dict[str, list[float]] = {name: [] for name in lms}
    tokens: dict[str, list[list[int]]] = {name: [] for name in lms}
    try:
        for r in range(rounds):
            order = list(lms) if r % 2 == 0 else list(reversed(lms))
            for name in order:
                rate, ids = await decode_rate(lms[name], prompts[r % len(prompts)])
                rates[name].append(rate)
                tokens[name].append(ids)
    finally:
        for lm in lms.values():
            await asyncio.to_thread(lm.engine.stop)
    same = [sum(a == b for a, b in zip(x, y, strict=True)) / len(x) for x, y in zip(tokens["int8"], tokens["fp32"],
                                                                                   strict=True)]
    return {**ratios(rates["int8"], rates["fp32"]), "fp32_tokens_per_s": spread(rates["fp32"]),
            "int8_tokens_per_s": spread(rates["int8"]), "greedy_tokens_equal": statistics.mean(same),
            "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS}


def prompts_of(loaded: Loaded, n: int) -> list[list[int]]:
    rng = random.Random(103)
    tok: Callable[[str], Any] = loaded.tokenizer  # type: ignore[assignment]
    return [list(tok(" ".join(sentence(rng) for _ in range(12)))["input_ids"])[:PROMPT_TOKENS] for _ in range(n)]


# ------------------------------------------------------------------------------------------- main

def model_facts(loaded: Loaded, base: Path) -> Obj:
    config: Any = getattr(loaded.model, "config")  # noqa: B009
    lineage = base / "kubeforge-lineage.json"
    return {"layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "intermediate": config.intermediate_size, "vocab": config.vocab_size,
            "parameters": sum(p.numel() for p in loaded.model.parameters()),
            "made_by": "bench/train/bench_finetune.py (full fine-tune by the trainer of a random Llama)",
            "lineage": json.loads(lineage.read_text()) if lineage.is_file() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pretrain-steps", type=int, default=60, help="the fine-tuning benchmark's base")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    base = cached_base(args.pretrain_steps)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kf-bench-llm-int8-") as tmp:
        storage = Path(tmp)
        shutil.copytree(base, storage / "model")  # the stage's inputs lie under its storage root
        heldout_text(base, storage / "heldout.txt")
        fp32 = load(base)
        window = torch.tensor([prompts_of(fp32, 1)[0] * 3])[:, :CONTEXT]
        form_times = time_forms(fp32.model, window, args.rounds)
        report, stage_numbers = stage(storage, args.rounds)
        if report.artifact is None:  # rejected: the candidate's own artifact is still written
            report_path = report.candidates[0].artifact
            assert report_path is not None
            variant = storage / report_path.path
        else:
            variant = storage / report.artifact.path
        models = {"fp32": load(base), "int8": load(variant)}
        served = asyncio.run(serve_side_by_side(models, prompts_of(fp32, args.rounds), args.rounds))
        facts = model_facts(fp32, base)
    result: Obj = {
        "machine": (f"{os.cpu_count()}-core CPU, torch {torch.__version__}, torchao {package_version('torchao')}, "
                    f"transformers {package_version('transformers')}, one torch thread"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "model": facts,
        "forms": form_times, "stage": stage_numbers, "serving": served,
        "seconds": round(time.perf_counter() - began),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}  # 1-minute, at start and end
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "model"}, indent=2), flush=True)


if __name__ == "__main__":
    main()
