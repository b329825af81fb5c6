"""Int8 of a causal language model, from the compression stage to the generation engine: a tiny Llama
made here is compressed (dynamic int8, judged by perplexity on held-out text within
`maxPerplexityIncrease`, timed by its decode steps), and the published variant, loaded through the
model-format layer as the server loads it, generates through the engine (paged attention, a KV cache
whose memory starts as NaN, as reused memory may) exactly what the int8 model's own greedy
`generate()` gives, in the form the report timed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import torch
from kubeforge_api.compression import CompressionSpec, CompressionTermination, Verdict
from kubeforge_api.openai import CompletionRequest
from kubeforge_api.server_settings import ServerSettings
from kubeforge_api.storage import ModelFormat
from kubeforge_server.llm import serving
from kubeforge_trainer.compress.pipeline import Outcome, run
from kubeforge_trainer.evaldata import EvalSource
from kubeforge_trainer.formats import Loaded, Task, load
from llm_models import corpus, tiny_llama
from prometheus_client import CollectorRegistry
from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

NEW_TOKENS = 12
PROMPTS = ("ada trains the red kettle near the", "what colour is it? bo paints the")


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Outcome]:
    storage = tmp_path_factory.mktemp("int8")
    tiny_llama(storage / "artifact")
    (storage / "heldout.txt").write_text(" ".join(corpus(120, seed=5)))
    spec = CompressionSpec.model_validate({"methods": [{"quantize": {"mode": "dynamic"}}], "objective": "size",
                                           "accuracyBudget": {"maxPerplexityIncrease": 0.02}})
    outcome = run(storage / "artifact", spec, storage / "compressed", storage, threads=1, rounds=3,
                  eval_data=EvalSource(storage / "heldout.txt", "text", 8))
    return storage, outcome


def test_the_report_times_decode_steps_and_gates_on_perplexity(compressed: tuple[Path, Outcome]) -> None:
    _, outcome = compressed
    report = outcome.report
    [cand] = report.candidates
    assert report.metric == "perplexity" and report.budget.relative and report.budget.max_drop == 0.02
    assert cand.verdict == Verdict.ACCEPTED and report.artifact is not None, cand.note
    assert cand.drop is not None and cand.drop <= 0.02
    assert report.timing == "decode" and cand.note is not None and "decode" in cand.note
    assert cand.measured is not None and cand.speedup is not None
    assert report.baseline.decode_tokens_per_s == pytest.approx(1000 / report.baseline.latency_ms.batch1, rel=1e-3)
    assert cand.measured.decode_tokens_per_s == pytest.approx(1000 / cand.measured.latency_ms.batch1, rel=1e-3)
    status = CompressionTermination.from_report(report, "compressed/report.json")  # what status.compression gets
    assert status.timing == "decode" and status.baseline is not None and status.baseline.decode_tokens_per_s
    assert status.candidates[0].decode_tokens_per_s == cand.measured.decode_tokens_per_s


def greedy(loaded: Loaded, prompt: list[int]) -> list[int]:
    """The int8 model's own greedy `generate()` (transformers' KV cache, no engine)."""
    with torch.inference_mode():
        x = torch.tensor([prompt])
        out = loaded.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,  # type: ignore[operator]
                                    do_sample=False)
    return list(out[0, len(prompt):].tolist())


async def served(loaded: Loaded, prompts: list[list[int]]) -> list[list[int]]:
    """Greedy tokens of each prompt through the engine, its cache memory first filled with NaN."""
    lm = serving.build(loaded, ServerSettings(model_name="int8", kv_cache_bytes=1 << 20), CollectorRegistry())
    for tensor in (*lm.engine.cache.keys, *lm.engine.cache.values):
        tensor.fill_(float("nan"))
    lm.engine.start(asyncio.get_running_loop())
    try:
        await serving.warm_up(lm)
        outs = []
        for prompt in prompts:
            request = CompletionRequest(model="int8", prompt=prompt, max_tokens=NEW_TOKENS, temperature=0.0,
                                        ignore_eos=True)
            gen = lm.generation(request, prompt, time.perf_counter())
            while not gen.done:
                await gen.next_text()
            assert gen.error is None, gen.error
            outs.append(list(gen.text.ids))
        return outs
    finally:
        await asyncio.to_thread(lm.engine.stop)


def test_the_engine_serves_the_published_int8_variant_as_timed(compressed: tuple[Path, Outcome]) -> None:
    storage, outcome = compressed
    assert outcome.report.artifact is not None
    loaded = load(storage / outcome.report.artifact.path)
    assert loaded.format == ModelFormat.KUBEFORGE and loaded.task == Task.CAUSAL_LM and loaded.tokenizer is not None
    timed = outcome.models[0]
    assert timed is not None
    kinds = {name: type(m) for name, m in loaded.model.named_modules() if name.endswith(("proj", "lm_head"))}
    assert kinds == {name: type(m) for name, m in timed.named_modules() if name in kinds}  # the form the report timed
    assert all(issubclass(k, DynamicInt8Linear) for k in kinds.values())
    prompts = [list(loaded.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert asyncio.run(served(loaded, prompts)) == [greedy(loaded, p) for p in prompts]
