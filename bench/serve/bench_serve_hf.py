"""Serving a model users bring, side by side and interleaved on this machine: a BERT-style Hugging Face
text classifier (4 layers of width 256, about 5 M parameters, random init from a config; its WordPiece
tokenizer trained here on generated text; nothing is downloaded), served from its transformers
directory by Kubeforge's server (`python -m kubeforge_server`: strings tokenized per batch, opportunistic
batching with the ServingJob defaults, max batch 32 and no added delay) and by KServe's own Python
model server (bench/serve/kserve_hf_server.py: a `kserve.Model` that tokenizes, pads and runs the model
per request). Both servers run pinned to core 0 with one torch thread; wrk (one thread) runs pinned to
core 1 and sends one short text per request (a `BYTES` input named `text`, JSON), cycling through 64
texts of 6-16 words.

Before timing, each server answers 64 distinct texts sent concurrently, and every answer (logits and
label) is compared with transformers in-process on that text alone (1e-4). Then `--rounds` rounds,
each measuring every (server, clients) point once in a rotated order; the ratios are per round.
Context: our server's batch sizes and model time per point (from its /metrics), each server's CPU
time per request, and the model alone in-process at batch 1 and 32 (the most batching can give).
Writes bench/results/serve_hf.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kubeforge_operator.ports import free_port
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: bench.serve.*
from bench.serve.bench_serve import (
    KSERVE_PY,
    LOAD_CORE,
    SERVER_CORE,
    Target,
    cpu_seconds,
    kserve_status,
    post,
    spread,
    start,
)

REPO = Path(__file__).resolve().parents[2]
HERE = REPO / "bench" / "serve"
MODEL = "bert"
Obj = dict[str, Any]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 128
HIDDEN, LAYERS, HEADS, INTERMEDIATE, VOCAB = 256, 4, 4, 1024, 8000
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

WRK_SCRIPT = """
local bodies = {{ {bodies} }}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "{path}", nil, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format('\\nRESULT {{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"non2xx": %d, "errors": %d}}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


def lexicon(rng: random.Random, n: int = 6000) -> list[str]:
    """`n` distinct pseudo-words of 1-4 syllables."""
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
    return sorted(words)


def sentences(rng: random.Random, words: list[str], n: int, lo: int = 6, hi: int = 16) -> list[str]:
    """`n` texts of `lo`-`hi` words, word frequencies Zipf-like as in natural text."""
    weights = [1 / (rank + 1) for rank in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(lo, hi))) for _ in range(n)]


def build(directory: Path) -> Obj:
    """The classifier and its tokenizer, saved as a transformers directory (safetensors)."""
    rng = random.Random(0)
    words = lexicon(rng)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(sentences(rng, words, 20000), trainers.WordPieceTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(s, tok.token_to_id(s)) for s in SPECIALS[2:4]])
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, model_max_length=MAX_LENGTH, padding_side="right", unk_token="[UNK]",
        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=HEADS, intermediate_size=INTERMEDIATE, max_position_embeddings=MAX_LENGTH,
                        id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = BertForSequenceClassification(config).eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(directory)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab": tok.get_vocab_size(),
            "hidden": HIDDEN, "layers": LAYERS, "heads": HEADS, "intermediate": INTERMEDIATE,
            "max_length": MAX_LENGTH}


def body_for(text: str) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}).encode()


def reference(model_dir: Path) -> tuple[Any, Any]:
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True,
                                                               trust_remote_code=False).eval()
    return tok, model


def verify(target: Target, tok: Any, model: Any, texts: list[str], tolerance: float = 1e-4) -> float:
    """Concurrent distinct texts; the largest deviation of any answer from transformers on that text alone
    (and every label the reference's)."""
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: post(target.port, target.infer_path, body_for(t)), texts))
    worst = 0.0
    for text, answer in zip(texts, answers, strict=True):
        outputs = {o["name"]: o for o in answer["outputs"]}
        got = np.array(outputs["logits"]["data"], dtype=np.float32)
        with torch.inference_mode():
            want = model(**tok([text], truncation=True, return_tensors="pt")).logits.numpy().reshape(-1)
        worst = max(worst, float(np.abs(got - want).max()))
        if outputs["label"]["data"] != [LABELS[int(want.argmax())]]:
            raise AssertionError(f"{target.name}: label {outputs['label']['data']} for {text!r}")
    if worst > tolerance:
        raise AssertionError(f"{target.name}: answers differ from transformers in-process by {worst}")
    return worst


def wrk(port: int, path: str, conc: int, seconds: float, bodies: list[bytes]) -> Obj:
    """wrk sending the bodies in turn; requests, req/s and latency percentiles."""
    script = WRK_SCRIPT.format(path=path, bodies=", ".join(f"[==[{b.decode()}]==]" for b in bodies))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conc}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
           "-s", f.name, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    os.unlink(f.name)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-1000:]} {out.stderr[-1000:]}")
    r = json.loads(line[len("RESULT "):])
    if r["non2xx"] or r["errors"]:
        raise RuntimeError(f"wrk saw {r['non2xx']} non-2xx answers and {r['errors']} socket errors on {path}")
    return {"requests": r["requests"], "rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "duration_s": r["duration_us"] / 1e6}


_METRIC = re.compile(r'^(kubeforge_inference_batch_size_(?:sum|count)|kubeforge_inference_latency_seconds_sum'
                     r'\{stage="(?:inference|queue)"\}) ([0-9.e+-]+)$', re.M)


def server_metrics(port: int) -> dict[str, float]:
    """Our server's batch-size and per-stage latency sums (Prometheus text)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1).replace('{stage="', "_").replace('"}', ""): float(m.group(2)) for m in _METRIC.finditer(text)}


def measure(t: Target, conc: int, seconds: float, bodies: list[bytes]) -> Obj:
    """wrk against a target, the server's CPU time per request and, for ours, what its batcher did."""
    ours = t.name == "ours"
    before_m = server_metrics(t.port) if ours else {}
    before = cpu_seconds(t.proc.pid)
    r = wrk(t.port, t.infer_path, conc, seconds, bodies)
    cpu = cpu_seconds(t.proc.pid) - before
    out = {**r, "cpu_s": cpu, "per_cpu_s": r["requests"] / cpu if cpu > 0 else 0.0,
           "cpu_ms_per_request": 1000 * cpu / max(1, r["requests"])}
    if ours:
        d = {k: v - before_m.get(k, 0.0) for k, v in server_metrics(t.port).items()}
        batches = max(1.0, d["kubeforge_inference_batch_size_count"])
        out |= {"mean_batch": d["kubeforge_inference_batch_size_sum"] / batches,
                "model_ms_per_batch": 1000 * d["kubeforge_inference_latency_seconds_sum_inference"] / batches,
                "model_busy": d["kubeforge_inference_latency_seconds_sum_inference"] / r["duration_s"],
                "queue_ms_mean": 1000 * d["kubeforge_inference_latency_seconds_sum_queue"]
                / max(1.0, d["kubeforge_inference_batch_size_sum"])}
    return out


def launch(model_dir: Path, batch: int, delay_ms: int) -> dict[str, Target]:
    ours_env = {"KUBEFORGE_MODEL_DIR": str(model_dir), "KUBEFORGE_MODEL_NAME": MODEL, "KUBEFORGE_SERVER_HOST":
                "127.0.0.1", "KUBEFORGE_TORCH_THREADS": "1", "KUBEFORGE_MAX_BATCH_SIZE": str(batch),
                "KUBEFORGE_MAX_DELAY_MS": str(delay_ms)}
    targets: dict[str, Target] = {}
    port = free_port()
    targets["ours"] = start("ours", [sys.executable, "-m", "kubeforge_server"],
                            {**ours_env, "KUBEFORGE_SERVER_PORT": str(port)}, port, MODEL)
    port = free_port()
    targets["kserve"] = start("kserve", [str(KSERVE_PY), str(HERE / "kserve_hf_server.py"), str(model_dir), str(port)],
                              {}, port, MODEL)
    return targets


POINTS: list[tuple[str, int]] = [("ours", 32), ("kserve", 32), ("ours", 1), ("kserve", 1)]


def one_round(targets: dict[str, Target], bodies: list[bytes], seconds: float, shift: int) -> dict[str, Obj]:
    points = POINTS[shift % len(POINTS):] + POINTS[:shift % len(POINTS)]
    return {f"{name}_c{conc}": measure(targets[name], conc, seconds, bodies) for name, conc in points}


def summarize(rounds: list[dict[str, Obj]]) -> Obj:
    def ratio(a: str, b: str, key: str = "rps") -> Obj:
        return spread([r[a][key] / r[b][key] for r in rounds])

    keys = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "mean_batch", "model_ms_per_batch", "model_busy",
            "queue_ms_mean")
    return {"points": {p: {k: spread([r[p][k] for r in rounds]) for k in keys if k in rounds[0][p]} for p in rounds[0]},
            "throughput_c32_vs_kserve": ratio("ours_c32", "kserve_c32"),
            "p99_c32_vs_kserve": ratio("ours_c32", "kserve_c32", "p99_ms"),
            "p50_c32_vs_kserve": ratio("ours_c32", "kserve_c32", "p50_ms"),
            "per_cpu_throughput_c32_vs_kserve": ratio("ours_c32", "kserve_c32", "per_cpu_s"),
            "throughput_c1_vs_kserve": ratio("ours_c1", "kserve_c1"),
            "p50_c1_vs_kserve": ratio("ours_c1", "kserve_c1", "p50_ms")}


def model_alone(model: Any, tok: Any, texts: list[str], rounds: int, seconds: float = 1.0) -> Obj:
    """The model in-process at one thread, interleaved: 32 texts one at a time vs the 32 as one padded batch
    (tokenization included in both): the most that batching alone can give, per round. And where a padded
    batch's time goes: the tokenizer (padding and tensors included) vs the model, and the share of its
    positions that are padding."""
    single = [tok([t], truncation=True, return_tensors="pt") for t in texts[:32]]
    padded = tok(texts[:32], truncation=True, padding=True, return_tensors="pt")

    def one_by_one() -> None:
        for t in texts[:32]:
            model(**tok([t], truncation=True, return_tensors="pt"))

    def batched() -> None:
        model(**tok(texts[:32], truncation=True, padding=True, return_tensors="pt"))

    def tokenize() -> None:
        tok(texts[:32], truncation=True, padding=True, return_tensors="pt")

    def forward() -> None:
        model(**padded)

    def rate(fn: Any) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += 32
        return n / (time.perf_counter() - t0)

    with torch.inference_mode():
        model(**single[0])
        runs = [(rate(one_by_one), rate(batched), rate(tokenize), rate(forward)) for _ in range(rounds)]
    tokens = [int(s["input_ids"].shape[1]) for s in single]
    mask = padded["attention_mask"]
    return {"batch1_rows_per_s": spread([r[0] for r in runs]), "batch32_rows_per_s": spread([r[1] for r in runs]),
            "batch32_vs_batch1": spread([r[1] / r[0] for r in runs]),
            "tokenizer_share_of_batch32": spread([(1 / r[2]) / (1 / r[2] + 1 / r[3]) for r in runs]),
            "padding_share_of_batch32": 1 - float(mask.sum()) / mask.numel(),
            "tokens_per_text": {"median": statistics.median(tokens), "min": min(tokens), "max": max(tokens)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--max-batch", type=int, default=32, help="KUBEFORGE_MAX_BATCH_SIZE (ServingJob default 32)")
    ap.add_argument("--max-delay-ms", type=int, default=0, help="KUBEFORGE_MAX_DELAY_MS (ServingJob default 0)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve_hf.json")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")
    kserve, kserve_note = kserve_status()
    if not kserve:  # the comparison is the benchmark: no results without it
        sys.exit(f"{kserve_note} (bench/serve/setup_kserve.sh makes it)")
    work = Path(tempfile.mkdtemp(prefix="kf-bench-serve-hf-"))
    torch.set_num_threads(1)
    try:
        shape = build(work / "model")
        tok, model = reference(work / "model")
        rng = random.Random(1)
        words = lexicon(random.Random(0))
        load_texts, check_texts = sentences(rng, words, 64), sentences(rng, words, 64)
        bodies = [body_for(t) for t in load_texts]
        targets = launch(work / "model", args.max_batch, args.max_delay_ms)
        try:
            checked = {name: verify(t, tok, model, check_texts) for name, t in targets.items()}
            for t in targets.values():  # warm-up
                wrk(t.port, t.infer_path, 32, 1.0, bodies)
            rounds = [one_round(targets, bodies, args.seconds, i) for i in range(args.rounds)]
        finally:
            for t in targets.values():
                t.proc.terminate()
                t.proc.wait(timeout=60)
        alone = model_alone(model, tok, load_texts, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"machine": f"{os.cpu_count()}-core CPU, servers on core {SERVER_CORE}, wrk on core {LOAD_CORE}, "
                         f"torch {torch.__version__}, 1 torch thread", "python": platform.python_version(),
              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "model": (f"BERT-style classifier, {shape['layers']} layers of width {shape['hidden']}, "
                        f"{shape['parameters'] / 1e6:.1f} M parameters, vocabulary {shape['vocab']}; one text of "
                        f"6-16 words per request (JSON BYTES)"), "shape": shape,
              "ours_settings": {"max_batch_size": args.max_batch, "max_delay_ms": args.max_delay_ms},
              "seconds_per_point": args.seconds, "kserve": kserve_note, "max_answer_deviation": checked,
              **summarize(rounds), "model_alone": alone, "rounds": rounds}
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("rounds",)}, indent=2))


if __name__ == "__main__":
    main()
