"""Serving a causal language model, side by side and interleaved on this machine: a Llama-style model of
about 27 M parameters (9 layers of width 512, random init from a config; its byte-level BPE tokenizer
and ChatML template trained here; nothing is downloaded) served by

- ours: Kubeforge's server (`python -m kubeforge_server`: continuous batching, paged KV cache, prefix
  caching, all defaults),
- B0: a naive server in the KServe Hugging Face backend's design (Starlette on uvicorn, one worker
  thread taking requests first in, first out and running `generate()` for each, a streamer feeding the
  SSE stream; this file's `--b0` mode; KServe's own OpenAI routes need vLLM, which is CUDA-only),
- B1: `transformers serve --continuous-batching` (transformers' own continuous batching with paged
  attention, SDPA, on CPU, offline; in the KServe benchmark environment, which has its web stack).

Every server runs pinned to core 0 with one torch thread; the load generator (this process) runs on
core 1. A round sends 32 new streaming greedy completions at once (prompts of 64-192 tokens, 32 new
tokens) to each server in turn (rotated order), then 4 single-stream requests to ours, then the
shared-prefix workload (16 requests, 4 at a time, one 512-token system prompt and a short question
each, 8 new tokens) to ours and to ours with prefix caching off. Ratios are per round; the report
gives their median and spread. Round 1 also checks that the three servers give the same answers.

Measured: output tokens/s (tokens / (last answer - first request)); TTFT (request sent to the first
chunk of tokens: every server sends a chunk per step with new tokens, its text empty while it ends
inside a character) p50/p99; inter-token latency (gaps between those chunks) p50 at 32 clients and
single-stream;
KV waste (`kubeforge:kv_cache_waste_perc` sampled while 32 streams run); concurrent sequences at a
fixed KV budget of two full contexts (peak `kubeforge:num_requests_running` under 32 clients) vs
contiguous max-length preallocation (2); TTFT p50 with vs without prefix caching; the server's TTFT
p50 (from its histogram) vs the client's. Writes bench/results/llm.json."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubeforge_operator.ports import free_port

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: the tests' tiny-model builders resolve from the repository root

Obj = dict[str, Any]
RESULTS = REPO / "bench" / "results" / "llm.json"
KSERVE_PY = REPO / ".bench" / "kserve-venv" / "bin" / "python"
SERVER_CORE, LOAD_CORE = "0", "1"
NAME = "llm"
MODEL = {"layers": 9, "hidden": 512, "intermediate": 1408, "heads": 8}
CLIENTS, NEW_TOKENS, PROMPT_TOKENS = 32, 32, (64, 192)
SINGLE_REQUESTS = 4
PREFIX_TOKENS, PREFIX_REQUESTS, PREFIX_CONCURRENCY, PREFIX_NEW = 512, 16, 4, 8
KV_BUDGET_CONTEXTS = 2  # the fixed budget of the concurrency comparison, in full contexts
TTFT = "kubeforge:time_to_first_token_seconds"


@dataclass
class Result:
    """One streamed request, as the client saw it."""

    sent: float
    chunks: list[float] = field(default_factory=list)  # arrival of each chunk of new tokens
    text: str = ""
    tokens: int = 0
    end: float = 0.0

    @property
    def ttft(self) -> float:
        return self.chunks[0] - self.sent if self.chunks else self.end - self.sent


@dataclass
class Target:
    name: str
    url: str  # .../v1
    model: str
    proc: subprocess.Popen[bytes]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def spread(values: list[float]) -> Obj:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


# ---------------------------------------------------------------- B0: the naive server (`--b0` mode)

def b0_app(model_dir: Path) -> Any:
    """Starlette app: /v1/completions (streamed or whole), generate() per request on one worker thread."""
    import queue

    import torch
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    model.eval()  # type: ignore[no-untyped-call]
    jobs: queue.Queue[tuple[list[int], int, Any]] = queue.Queue()

    def worker() -> None:
        while True:
            ids, new, streamer = jobs.get()
            with torch.inference_mode():
                x = torch.tensor([ids])
                model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, do_sample=False,
                               streamer=streamer)

    threading.Thread(target=worker, daemon=True).start()

    async def completions(request: Request) -> Response:
        body = await request.json()
        ids = tokenizer(body["prompt"])["input_ids"]
        tokens: asyncio.Queue[int | None] = asyncio.Queue()
        jobs.put((ids, int(body.get("max_tokens", 16)), _Streamer(asyncio.get_running_loop(), tokens)))
        if body.get("stream"):
            return StreamingResponse(_b0_events(tokenizer, tokens, body), media_type="text/event-stream")
        out: list[int] = []
        while (token := await tokens.get()) is not None:
            out.append(token)
        return JSONResponse({"object": "text_completion", "model": body["model"], "choices": [
            {"index": 0, "text": tokenizer.decode(out, skip_special_tokens=True), "finish_reason": "length"}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(out)}})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


class _Streamer:
    """transformers' streamer protocol: `put` the prompt, then each new token; `end`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tokens: asyncio.Queue[int | None]) -> None:
        self.loop, self.tokens, self.prompt_seen = loop, tokens, False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.tokens.put_nowait, int(token))

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.tokens.put_nowait, None)


async def _b0_events(tokenizer: Any, tokens: asyncio.Queue[int | None], body: Obj) -> Any:
    out: list[int] = []
    sent = ""
    while (token := await tokens.get()) is not None:  # a chunk per token, as the other two servers send
        out.append(token)
        text = tokenizer.decode(out, skip_special_tokens=True)
        delta = ""
        if len(text) > len(sent) and not text.endswith("\ufffd"):
            delta, sent = text[len(sent):], text
        chunk = {"object": "text_completion", "model": body["model"],
                 "choices": [{"index": 0, "text": delta, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    usage = {"prompt_tokens": 0, "completion_tokens": len(out)}
    final = {"object": "text_completion", "model": body["model"],
             "choices": [{"index": 0, "text": tokenizer.decode(out, skip_special_tokens=True)[len(sent):],
                          "finish_reason": "length"}], "usage": usage}
    yield f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n"


def serve_b0(model_dir: Path, port: int) -> None:
    import torch
    import uvicorn

    torch.set_num_threads(1)
    uvicorn.run(b0_app(model_dir), host="127.0.0.1", port=port, log_level="warning", loop="uvloop")


# ---------------------------------------------------------------- servers

def spawn(name: str, cmd: list[str], env: dict[str, str], url: str, model: str) -> Target:
    """Start a server pinned to the server core; ready when a completion answers."""
    base = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
                [str(REPO / "operator"), str(REPO / "trainer_image"), os.environ.get("PYTHONPATH", "")])}
    log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server) a file, not a pipe: never blocks
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *cmd], env={**base, **env}, stdout=log,
                            stderr=subprocess.STDOUT)
    body = json.dumps({"model": model, "prompt": "ada trains", "max_tokens": 2, "temperature": 0}).encode()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{name} exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            req = urllib.request.Request(f"{url}/completions", body, {"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.status == 200:
                    return Target(name, url, model, proc)
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{name} not answering after 300 s")


def start_ours(name: str, model_dir: Path, env: dict[str, str] | None = None) -> Target:
    port = free_port()
    env = {"KUBEFORGE_MODEL_DIR": str(model_dir), "KUBEFORGE_MODEL_NAME": NAME, "KUBEFORGE_SERVER_HOST": "127.0.0.1",
           "KUBEFORGE_SERVER_PORT": str(port), "KUBEFORGE_TORCH_THREADS": "1", **(env or {})}
    return spawn(name, [sys.executable, "-m", "kubeforge_server"], env, f"http://127.0.0.1:{port}/v1", NAME)


def start_b0(model_dir: Path) -> Target:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--b0", str(model_dir), str(port)]
    return spawn("B0", cmd, {}, f"http://127.0.0.1:{port}/v1", NAME)


def start_b1(model_dir: Path) -> Target | str:
    """transformers serve --continuous-batching, or why it cannot run here."""
    if not KSERVE_PY.exists():
        return "the benchmark environment (.bench/kserve-venv, bench/serve/setup_kserve.sh) is missing"
    port = free_port()
    cmd = [str(KSERVE_PY), "-c", "from transformers.cli.transformers import main; main()", "serve", str(model_dir),
           "--continuous-batching", "--device", "cpu", "--dtype", "float32", "--attn-implementation", "sdpa",
           "--host", "127.0.0.1", "--port", str(port), "--cb-block-size", "16", "--cb-num-blocks", "4096",
           "--cb-max-batch-tokens", "256", "--log-level", "warning"]
    try:
        return spawn("B1", cmd, {}, f"http://127.0.0.1:{port}/v1", str(model_dir))
    except RuntimeError as e:
        return str(e)


# ---------------------------------------------------------------- load and measurements

async def stream_one(client: Any, t: Target, prompt: str, new: int) -> Result:
    body = {"model": t.model, "prompt": prompt, "max_tokens": new, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    r = Result(sent=time.perf_counter())
    async with client.stream("POST", f"{t.url}/completions", json=body, timeout=900) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{t.name}: {resp.status_code} {(await resp.aread())[:300]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            for choice in event.get("choices") or []:
                if choice.get("finish_reason") is None:  # a chunk of new tokens (their text may be incomplete)
                    r.chunks.append(time.perf_counter())
                r.text += choice.get("text") or ""
            if event.get("usage"):
                r.tokens = int(event["usage"]["completion_tokens"])
    r.end = time.perf_counter()
    r.tokens = r.tokens or len(r.chunks)
    return r


async def load(t: Target, prompts: list[str], new: int, concurrency: int) -> list[Result]:
    httpx: Any = importlib.import_module("httpx2")  # the openai client's HTTP library
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        async def one(prompt: str) -> Result:
            async with gate:
                return await stream_one(client, t, prompt, new)

        return list(await asyncio.gather(*(one(p) for p in prompts)))


def summary(results: list[Result]) -> Obj:
    tokens = sum(r.tokens for r in results)
    seconds = max(r.end for r in results) - min(r.sent for r in results)
    gaps = [b - a for r in results for a, b in zip(r.chunks, r.chunks[1:], strict=False)]
    ttfts = [r.ttft for r in results]
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "ttft_p50": quantile(ttfts, 0.5), "ttft_p99": quantile(ttfts, 0.99),
            "itl_p50": quantile(gaps, 0.5) if gaps else 0.0, "itl_p99": quantile(gaps, 0.99) if gaps else 0.0}


def scrape(t: Target) -> str:
    with urllib.request.urlopen(t.url.removesuffix("/v1") + "/metrics", timeout=10) as r:
        text: str = r.read().decode()
        return text


def series(text: str, name: str) -> dict[str, float]:
    """`name`'s samples by their label text."""
    out: dict[str, float] = {}
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def histogram_quantile(before: str, after: str, name: str, q: float) -> float:
    """The q-quantile of what a histogram observed between two scrapes (linear within a bucket)."""
    def buckets(text: str) -> list[tuple[float, float]]:
        found = series(text, name + "_bucket")
        return sorted((float(re.search(r'le="([^"]+)"', k).group(1)), v) for k, v in found.items())  # type: ignore[union-attr]

    counts = [(le, a - b) for (le, a), (_, b) in zip(buckets(after), buckets(before), strict=True)]
    total = counts[-1][1]
    rank, low, below = q * total, 0.0, 0.0
    for le, cumulative in counts:
        if cumulative >= rank:
            return low + (le - low) * ((rank - below) / (cumulative - below) if cumulative > below else 0.0)
        low, below = le, cumulative
    return counts[-2][0]


async def sampled_load(t: Target, prompts: list[str], new: int, concurrency: int) -> tuple[list[Result], list[Obj]]:
    """`load` while /metrics is read every 0.2 s: (results, samples of running, usage and waste)."""
    samples: list[Obj] = []
    task = asyncio.ensure_future(load(t, prompts, new, concurrency))
    while not task.done():
        text = await asyncio.to_thread(scrape, t)
        samples.append({k: sum(series(text, f"kubeforge:{k}").values())
                        for k in ("num_requests_running", "kv_cache_usage_perc", "kv_cache_waste_perc")})
        await asyncio.sleep(0.2)
    return await task, samples


# ---------------------------------------------------------------- the run

def workloads(tokenizer: Any, seed: int) -> tuple[list[str], list[str]]:
    """(32 prompts of 64-192 tokens, 16 questions after one 512-token system prompt): new prompts for each
    seed (a round must not find the last round's prompts in a prefix cache), the same system prompt."""
    from tests.llm_models import corpus

    lines = corpus(600, seed=5)
    rng = random.Random(0)

    def text_of(tokens: int) -> str:
        ids: list[int] = []
        while len(ids) < tokens:
            ids += tokenizer(" " + rng.choice(lines))["input_ids"]
        decoded: str = tokenizer.decode(ids[:tokens])
        return decoded

    system = "system: " + text_of(PREFIX_TOKENS)
    rng.seed(seed + 1)
    prompts = [text_of(rng.randint(*PROMPT_TOKENS)) for _ in range(CLIENTS)]
    prefixed = [f"{system}\nuser: {rng.choice(lines)}\nassistant:" for _ in range(PREFIX_REQUESTS)]
    return prompts, prefixed


async def one_round(index: int, targets: dict[str, Target], prompts: list[str], prefixed: list[str]) -> Obj:
    out: Obj = {}
    names: list[str] = [n for n in ("ours", "B0", "B1") if n in targets]
    for name in names[index % len(names):] + names[:index % len(names)]:
        t = targets[name]
        before = scrape(t) if name == "ours" else ""
        results, samples = await sampled_load(t, prompts, NEW_TOKENS, CLIENTS) if name == "ours" else (
            await load(t, prompts, NEW_TOKENS, CLIENTS), [])
        out[name] = {**summary(results), "texts": [r.text for r in results]}
        if name == "ours":
            busy = [s["kv_cache_waste_perc"] for s in samples if s["num_requests_running"] >= CLIENTS // 2]
            out[name]["kv_waste_mean"] = statistics.mean(busy) if busy else None
            out[name]["server_ttft_p50"] = histogram_quantile(before, scrape(t), TTFT, 0.5)
    out["single"] = summary(await load(targets["ours"], prompts[:SINGLE_REQUESTS], NEW_TOKENS, 1))
    pair = ["ours", "ours_noprefix"] if index % 2 == 0 else ["ours_noprefix", "ours"]
    for name in pair:
        out[f"prefix_{name}"] = summary(await load(targets[name], prefixed, PREFIX_NEW, PREFIX_CONCURRENCY))
    return out


def ratios(r: Obj) -> Obj:
    ours = r["ours"]
    out = {"throughput_vs_b0": ours["tokens_per_s"] / r["B0"]["tokens_per_s"],
           "ttft_p99_vs_b0": ours["ttft_p99"] / r["B0"]["ttft_p99"],
           "itl_p50_32_vs_single": ours["itl_p50"] / r["single"]["itl_p50"],
           "prefix_ttft_p50_on_vs_off": r["prefix_ours"]["ttft_p50"] / r["prefix_ours_noprefix"]["ttft_p50"],
           "server_vs_client_ttft_p50": ours["server_ttft_p50"] / ours["ttft_p50"]}
    if "B1" in r:
        out["throughput_vs_b1"] = ours["tokens_per_s"] / r["B1"]["tokens_per_s"]
    return out


def agreement(first: Obj) -> Obj:
    """How many answers of round 1 each server shares with B0 (greedy: all should)."""
    base = first["B0"]["texts"]
    return {name: sum(a == b for a, b in zip(first[name]["texts"], base, strict=True))
            for name in ("ours", "B1") if name in first} | {"of": len(base)}


async def kv_concurrency(model_dir: Path, prompts: list[str], per_token: int, context: int) -> Obj:
    """Peak running sequences of ours under 32 clients with a KV budget of two full contexts."""
    budget = KV_BUDGET_CONTEXTS * context * per_token
    t = await asyncio.to_thread(start_ours, "ours_kv", model_dir, {"KUBEFORGE_KV_CACHE_BYTES": str(budget)})
    try:
        results, samples = await sampled_load(t, prompts, NEW_TOKENS, CLIENTS)
        preempted = sum(series(scrape(t), "kubeforge:num_preemptions_total").values())
    finally:
        t.proc.terminate()
        t.proc.wait(30)
    peak = max(s["num_requests_running"] for s in samples)
    return {"budget_bytes": budget, "contiguous_sequences": KV_BUDGET_CONTEXTS, "peak_running": peak,
            "ratio": peak / KV_BUDGET_CONTEXTS, "preemptions": preempted,
            "tokens_per_s": summary(results)["tokens_per_s"]}


GOALS = {"throughput_vs_b0": (">=", 10.0), "throughput_vs_b1": (">=", 1.0), "ttft_p99_vs_b0": ("<=", 0.2),
         "itl_p50_32_vs_single": ("<=", 3.0), "prefix_ttft_p50_on_vs_off": ("<=", 0.3),
         "server_vs_client_ttft_p50": ("within", 0.1), "kv_waste": ("<=", 0.04), "kv_concurrency": (">=", 2.5)}


def met(name: str, value: float) -> bool:
    op, goal = GOALS[name]
    if op == ">=":
        return value >= goal
    if op == "<=":
        return value <= goal
    return abs(value - 1.0) <= goal


def report(rounds: list[Obj], kv: Obj, b1: str, model: Obj) -> Obj:
    per_round = [ratios(r) for r in rounds]
    results: Obj = {}
    for name in per_round[0]:
        s = spread([r[name] for r in per_round])
        results[name] = {**s, "goal": " ".join(map(str, GOALS[name])), "met": met(name, s["median"])}
    waste = [r["ours"]["kv_waste_mean"] for r in rounds if r["ours"]["kv_waste_mean"] is not None]
    if waste:
        results["kv_waste"] = {**spread(waste), "goal": "<= 0.04", "met": met("kv_waste", statistics.median(waste))}
    results["kv_concurrency"] = {**kv, "goal": ">= 2.5", "met": met("kv_concurrency", kv["ratio"])}
    context = {name: {k: statistics.median(r[name][k] for r in rounds)
                      for k in ("tokens_per_s", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99")}
               for name in ("ours", "B0", "B1", "single", "prefix_ours", "prefix_ours_noprefix") if name in rounds[0]}
    return {"machine": f"{os.cpu_count()}-core {platform.machine()} CPU, one torch thread per server",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "model": model,
            "workload": {"clients": CLIENTS, "new_tokens": NEW_TOKENS, "prompt_tokens": list(PROMPT_TOKENS),
                         "prefix_tokens": PREFIX_TOKENS, "prefix_requests": PREFIX_REQUESTS,
                         "prefix_concurrency": PREFIX_CONCURRENCY},
            "b1": b1 or "transformers serve --continuous-batching (sdpa, CPU)",
            "agreement_round1": agreement(rounds[0]), "results": results, "medians": context,
            "per_round": [{"ratios": ratio, **{k: {m: v for m, v in r[k].items() if m != "texts"} for k in r}}
                          for ratio, r in zip(per_round, rounds, strict=True)]}


def build_model(directory: Path) -> tuple[Any, Obj]:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from tests.llm_models import tiny_llama

    tiny_llama(directory, layers=MODEL["layers"], hidden=MODEL["hidden"], vocab_size=2048,
               intermediate=MODEL["intermediate"], heads=MODEL["heads"])
    config = json.loads((directory / "config.json").read_text())
    params = sum(p.numel() for p in load_file(str(directory / "model.safetensors")).values())
    kv_heads, head_dim = config["num_key_value_heads"], config["hidden_size"] // config["num_attention_heads"]
    per_token = 2 * config["num_hidden_layers"] * kv_heads * head_dim * 4
    info = {**MODEL, "parameters": params, "vocab": config["vocab_size"], "context": config["max_position_embeddings"],
            "kv_bytes_per_token": per_token}
    return AutoTokenizer.from_pretrained(directory), info


async def run(rounds: int, model_dir: Path) -> Obj:
    tokenizer, model = build_model(model_dir)
    targets = {"ours": start_ours("ours", model_dir), "B0": start_b0(model_dir),
               "ours_noprefix": start_ours("ours_noprefix", model_dir, {"KUBEFORGE_PREFIX_CACHING": "false"})}
    b1 = start_b1(model_dir)
    if isinstance(b1, Target):
        targets["B1"], why = b1, ""
    else:
        why = f"not run: {b1[:300]}"
    try:
        await load(targets["ours"], workloads(tokenizer, 0)[1][:1], 1, 1)  # the system prompt is cached first
        done = []
        for i in range(rounds):
            t0 = time.perf_counter()
            done.append(await one_round(i, targets, *workloads(tokenizer, i)))
            print(f"round {i + 1}/{rounds}: {time.perf_counter() - t0:.0f} s {ratios(done[-1])}", flush=True)
        kv = await kv_concurrency(model_dir, workloads(tokenizer, rounds)[0], model["kv_bytes_per_token"],
                                  model["context"])
    finally:
        for t in targets.values():
            t.proc.terminate()
            t.proc.wait(30)
    return report(done, kv, why, model)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--b0":
        serve_b0(Path(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(run(args.rounds, Path(tmp) / "model"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["results"], indent=2))


if __name__ == "__main__":
    main()
