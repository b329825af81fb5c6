"""Continuous batching changes no answer: 200 greedy requests, 32 at a time (prompts of 5 to 150
tokens, half after one shared prefix, so prompts are prefilled in chunks and blocks are shared
through the prefix cache), each answer token for token what single-stream `generate()` gives in this
process; once with a KV cache roomy enough for all 32, once with one of 1024 tokens, where sequences
wait for blocks and get preempted (and recomputed)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import openai
import pytest
import torch
from kubeforge_api.server_settings import ServerEnv
from llm_models import corpus, tiny_llama
from servehelp import Server, request
from transformers import AutoModelForCausalLM, AutoTokenizer

NAME = "tiny-llm"
REQUESTS, CONCURRENCY, NEW_TOKENS = 200, 32, 16
TIGHT_KV_TOKENS = 1024
KV_BYTES_PER_TOKEN = 2 * 2 * 2 * 16 * 4  # keys and values, 2 layers, 2 KV heads of 16, fp32 (tiny_llama)


def metric(port: int, name: str) -> float:
    lines = request(port, "GET", "/metrics").body.decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))


def prompts(tokenizer: object, n: int) -> list[list[int]]:
    rng = random.Random(1)
    lines = corpus(300, seed=3)
    shared = tokenizer(" ".join(lines[:6]))["input_ids"]  # type: ignore[operator]
    out = []
    for i in range(n):
        ids = tokenizer(" ".join(rng.sample(lines, rng.randint(1, 10))))["input_ids"]  # type: ignore[operator]
        ids = ids[:rng.randint(5, 150)]
        out.append((shared + ids)[:150] if i % 2 else ids)
    return out


def references(model_dir: Path, batch: list[list[int]]) -> list[list[int]]:
    torch.set_num_threads(1)  # the server has the other core
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    outs = []
    with torch.inference_mode():
        for ids in batch:
            x = torch.tensor([ids])
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS, do_sample=False)
            outs.append(y[0, len(ids):].tolist())
    return outs


async def served(port: int, batch: list[list[int]]) -> list[tuple[str, int]]:
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(ids: list[int]) -> tuple[str, int]:
        async with gate:
            stream = await client.completions.create(model=NAME, prompt=ids, max_tokens=NEW_TOKENS, temperature=0,
                                                     stream=True, stream_options={"include_usage": True})
            text, tokens = "", 0
            async for chunk in stream:
                text += "".join(c.text for c in chunk.choices)
                tokens = chunk.usage.completion_tokens if chunk.usage else tokens
            return text, tokens

    try:
        return await asyncio.gather(*(one(ids) for ids in batch))
    finally:
        await client.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("llm") / "model")


@pytest.fixture(scope="module")
def expected(model_dir: Path) -> tuple[list[list[int]], list[list[int]]]:
    batch = prompts(AutoTokenizer.from_pretrained(model_dir), REQUESTS)
    return batch, references(model_dir, batch)


@pytest.mark.parametrize("kv_tokens", [0, TIGHT_KV_TOKENS], ids=["roomy", "tight"])
def test_32_concurrent_greedy_streams_equal_single_stream_generate(
        model_dir: Path, expected: tuple[list[list[int]], list[list[int]]], kv_tokens: int) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch, generated = expected
    env = {ServerEnv.KV_CACHE_BYTES: str(kv_tokens * KV_BYTES_PER_TOKEN), ServerEnv.LLM_STEP_TOKENS: "128"}
    server = Server(model_dir, name=NAME, env=env).start()
    try:
        answers = asyncio.run(served(server.port, batch))
        preempted = metric(server.port, "kubeforge:num_preemptions_total")
        hits = metric(server.port, "kubeforge:prefix_cache_hits_total")
    finally:
        assert server.stop() == 0
    equal = sum(text == tokenizer.decode(ids, skip_special_tokens=True) and count == len(ids)
                for (text, count), ids in zip(answers, generated, strict=True))
    assert equal >= REQUESTS - 1, f"{REQUESTS - equal} of {REQUESTS} answers differ from generate()"
    assert hits > 0  # shared prefixes were computed once
    assert (preempted > 0) == (kv_tokens == TIGHT_KV_TOKENS)  # the tight cache took the preemption path
