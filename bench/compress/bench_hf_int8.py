"""Dynamic int8 on a model users bring: a BERT-style Hugging Face sequence classifier (4 layers, width
384, about 7.6 M parameters, built from a config with a WordPiece tokenizer trained here; nothing is
downloaded), trained briefly on a synthetic text task whose label is the class that two of a
sentence's three keywords belong to (the third is a distractor from another class, among filler
words), and compressed by the compression stage itself on a JSONL eval set of a few hundred lines,
as `kubeforge compress DIR --eval-data eval.jsonl` does.

Measured: the accuracy drop (the stage's report), and the speed-up of the eager int8 back end over
fp32 at batch 1 and 8 in the form a server calls the model (token ids right-padded, the attention
mask beside them), timed interleaved (fp32, int8, and torchao's int8 under torch.compile when
installed) for at least 5 rounds at one thread count: median per-round ratio with its min-max. The
published artifact is loaded back through the one loader and compared with fp32 row by row.
Writes bench/results/hf_int8.json."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.compression import CompressionSpec
from kubeforge_trainer import artifacts
from kubeforge_trainer.compress.evaluate import TextLogits
from kubeforge_trainer.compress.pipeline import run
from kubeforge_trainer.evaldata import EvalSource
from kubeforge_trainer.variants.quantize import EagerBackend, TorchaoBackend, int_mm_fast, package_version
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: the bench.* modules resolve from the repository root

from bench.compress.bench_compress import interleaved, speedups  # noqa: E402

Obj = dict[str, Any]
LABELS = ["billing", "shipping", "returns", "support"]
KEYWORDS = {i: [f"{name}{j}" for j in range(6)] for i, name in enumerate(("invoice", "parcel", "refund", "helpdesk"))}
FILLER = [f"w{i}" for i in range(600)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 64


def sentence(rng: random.Random, label: int) -> str:
    """10-30 filler words, two keywords of the label's class and one of another class."""
    other = rng.choice([c for c in KEYWORDS if c != label])
    words = [rng.choice(FILLER) for _ in range(rng.randint(10, 30))]
    for word in (rng.choice(KEYWORDS[label]), rng.choice(KEYWORDS[label]), rng.choice(KEYWORDS[other])):
        words.insert(rng.randrange(len(words) + 1), word)
    return " ".join(words)


def examples(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(sentence(rng, label), label) for label in (rng.randrange(len(LABELS)) for _ in range(n))]


def tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1000, special_tokens=SPECIALS))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(s, tok.token_to_id(s)) for s in SPECIALS[2:4]])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=MAX_LENGTH, unk_token="[UNK]",  # type: ignore[no-untyped-call]
                                   pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def train(directory: Path, steps: int, hidden: int, layers: int) -> Obj:
    """The classifier trained `steps` AdamW steps (batch 32, warm-up then linear decay), saved with its
    tokenizer as a Hugging Face directory."""
    data = examples(8000, seed=0)
    tok = tokenizer([t for t, _ in data])
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
                        max_position_embeddings=MAX_LENGTH, id2label=dict(enumerate(LABELS)),
                        label2id={name: i for i, name in enumerate(LABELS)})
    model = BertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-4, total_steps=steps, pct_start=0.1)
    rng, start = random.Random(1), time.perf_counter()
    model.train()
    for _ in range(steps):
        batch = [data[rng.randrange(len(data))] for _ in range(32)]
        enc = tok([t for t, _ in batch], padding="max_length", max_length=48, truncation=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    model.eval().save_pretrained(directory)  # type: ignore[no-untyped-call]
    tok.save_pretrained(directory)
    return {"parameters": sum(p.numel() for p in model.parameters()), "hidden": hidden, "layers": layers,
            "heads": hidden // 64, "train_steps": steps, "train_s": seconds, "final_loss": float(loss)}


def write_eval(path: Path, n: int) -> list[tuple[str, int]]:
    rows = examples(n, seed=2)
    path.write_text("".join(json.dumps({"text": t, "label": LABELS[y]}) + "\n" for t, y in rows))
    return rows


def stage(storage: Path, eval_path: Path, threads: int, rounds: int) -> Obj:
    """The compression stage on the directory, as `kubeforge compress` runs it (objective latency)."""
    spec = CompressionSpec.model_validate({"methods": [{"quantize": {"mode": "dynamic"}}],
                                           "accuracyBudget": {"maxDrop": 0.01}})
    report = run(storage / "model", spec, storage / "compressed", storage, threads, rounds,
                 eval_data=EvalSource(eval_path, "jsonl")).report
    [cand] = report.candidates
    assert cand.measured is not None and cand.speedup is not None
    return {"fp32_accuracy": report.baseline.metric, "int8_accuracy": cand.measured.metric,
            "drop_points": 100 * (report.baseline.metric - cand.measured.metric),
            "verdict": cand.verdict.value, "reason": report.reason.value, "note": cand.note or "",
            "stage_speedup_batch1": cand.speedup.batch1, "size_ratio": cand.size_ratio,
            "artifact": report.artifact.path if report.artifact else None}


def batches(tok: Any, rows: list[tuple[str, int]]) -> dict[int, torch.Tensor]:
    """Token ids as a server pads them: the first row alone, and the first 8 right-padded together."""
    enc = tok([t for t, _ in rows[:8]], padding=True, return_tensors="pt")
    return {1: tok([rows[0][0]], return_tensors="pt")["input_ids"], 8: enc["input_ids"]}


def timings(directory: Path, rows: list[tuple[str, int]], rounds: int, with_torchao: bool) -> Obj:
    """fp32, eager int8 (and torchao compiled) in the served form, interleaved, per batch size."""
    model = BertForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()  # type: ignore[no-untyped-call]
    tok = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
    pad = int(tok.pad_token_id)
    forms: dict[str, Any] = {"fp32": TextLogits(model, pad), "int8": TextLogits(EagerBackend().dynamic(
        BertForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()), pad)}  # type: ignore[no-untyped-call]
    out: Obj = {}
    x = batches(tok, rows)
    if with_torchao:
        ao = TorchaoBackend().dynamic(BertForSequenceClassification.from_pretrained(directory,  # type: ignore[no-untyped-call]
                                                                                    local_files_only=True).eval())
        start = time.perf_counter()
        forms["torchao"] = TorchaoBackend().serving(TextLogits(ao, pad))
        with torch.inference_mode():
            for b in (1, 8):
                forms["torchao"](x[b])
        out["torchao_compile_s"] = time.perf_counter() - start
    for b in (1, 8):
        times = interleaved(list(forms.values()), x[b], rounds)
        for name, stats in zip(list(forms)[1:], speedups(times), strict=True):
            out.setdefault(name, {})[f"batch{b}"] = stats
        if with_torchao:  # torchao's time against the eager back end's, in the same rounds
            ratios = [a / c for a, c in zip(times[1], times[2], strict=True)]
            out.setdefault("torchao_vs_eager", {})[f"batch{b}"] = {
                "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                "rounds": len(ratios)}
    out["batch_tokens"] = {f"batch{b}": list(x[b].shape) for b in (1, 8)}
    return out


@torch.inference_mode()
def agreement(storage: Path, artifact: str, rows: list[tuple[str, int]]) -> float:
    """Share of eval rows where the published artifact, loaded by the one loader, and fp32 agree."""
    _, int8 = artifacts.load_model(storage / artifact)
    fp32 = BertForSequenceClassification.from_pretrained(storage / "model", local_files_only=True).eval()  # type: ignore[no-untyped-call]
    tok = PreTrainedTokenizerFast.from_pretrained(storage / artifact, local_files_only=True)
    enc = tok([t for t, _ in rows], padding=True, return_tensors="pt")
    a = TextLogits(int8, int(tok.pad_token_id))(enc["input_ids"]).argmax(-1)
    b = TextLogits(fp32, int(tok.pad_token_id))(enc["input_ids"]).argmax(-1)
    return float((a == b).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the compression pod's default: 1)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--eval-samples", type=int, default=400)
    parser.add_argument("--no-torchao", action="store_true", help="skip torchao (its compile takes 1-2 minutes)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "hf_int8.json")
    args = parser.parse_args()
    torch.set_num_threads(2)  # training; measurements below use --threads
    storage = Path(tempfile.mkdtemp(prefix="kf-bench-hf-int8-"))
    model = train(storage / "model", args.steps, args.hidden, args.layers)
    rows = write_eval(storage / "eval.jsonl", args.eval_samples)
    torch.set_num_threads(args.threads)
    metric = {**stage(storage, storage / "eval.jsonl", args.threads, args.rounds), "eval_samples": len(rows)}
    if metric["artifact"]:
        metric["loaded_agreement"] = agreement(storage, metric["artifact"], rows)
    speed = timings(storage / "model", rows, args.rounds, not args.no_torchao and int_mm_fast())
    result: Obj = {
        "machine": (f"{os.cpu_count()}-core CPU ({'with' if int_mm_fast() else 'without'} AVX512-VNNI int8 "
                    f"matmul), torch {torch.__version__}, torchao {package_version('torchao')}, transformers "
                    f"{package_version('transformers')}"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "hf_int8": {"model": model, "metric": metric, **speed, "threads": args.threads}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
