"""A loaded causal language model made ready to generate: the model switched to paged attention, the
KV cache allocated from the budget (`kv_cache_bytes`, or a share of the memory), the engine started
and checked (a few greedy tokens through the engine must equal the model's plain forward passes),
and the requests' side: prompts and chat messages to token ids (a copy of the tokenizer: the Open
Inference Protocol path tokenizes on another thread, and a fast tokenizer is not shared safely
between threads), bounds against the context and the cache, and each request's `Generation` on the
event loop (tokens in, text out, stop strings)."""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from kubeforge_api.openai import DEFAULT_COMPLETION_TOKENS, ChatRequest, CompletionRequest
from kubeforge_api.server_settings import ServerSettings
from kubeforge_trainer.formats import Loaded, Task
from prometheus_client import CollectorRegistry

from . import attention
from .engine import Engine, EngineConfig, Update
from .errors import BadRequest
from .metrics import TokenMetrics
from .sampling import SamplingParams
from .text import TextStream

log = logging.getLogger("kubeforge_server")
MEMORY_SHARE = 4  # the default KV budget: a quarter of the memory
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory.max")
WARMUP_PROMPT = 5
WARMUP_TOKENS = 3
WARMUP_TOLERANCE = 1e-3  # logits: float rounding may differ between the two paths, choices may not


class Unsupported(Exception):
    """The model does not run correctly under paged attention."""


class LanguageModel:
    def __init__(self, loaded: Loaded, engine: Engine, name: str) -> None:
        assert loaded.tokenizer is not None
        self.tokenizer: Any = copy.deepcopy(loaded.tokenizer)
        self.engine, self.name = engine, name
        self.max_len = engine.config.max_len
        self.capacity = engine.config.num_blocks * engine.config.block_tokens  # tokens the whole cache holds
        self.vocab = int(loaded.model.get_input_embeddings().num_embeddings)  # type: ignore[operator]
        self.created = int(time.time())
        self.eos = eos_ids(loaded)

    def prompt_ids(self, request: CompletionRequest | ChatRequest) -> list[int]:
        if isinstance(request, ChatRequest):
            messages = [{"role": m.role, "content": m.text()} for m in request.messages]
            if not getattr(self.tokenizer, "chat_template", None):
                raise BadRequest("this model's tokenizer has no chat template; use /v1/completions", "messages")
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        elif isinstance(request.prompt, str):
            ids = self.tokenizer(request.prompt)["input_ids"]
        else:
            ids = list(request.prompt)
            if max(ids) >= self.vocab:
                raise BadRequest(f"token id {max(ids)} is not below the vocabulary size {self.vocab}", "prompt")
        if not ids:
            raise BadRequest("the prompt is empty (no tokens)", "prompt")
        return ids

    def max_new(self, request: CompletionRequest | ChatRequest, prompt: int) -> int:
        """Tokens to generate at most; 400 when the prompt and `max_tokens` exceed the context."""
        asked = request.token_limit() if isinstance(request, ChatRequest) else request.max_tokens
        param = "max_completion_tokens" if isinstance(request, ChatRequest) and request.max_completion_tokens else (
            "max_tokens")
        limit = min(self.max_len, self.capacity)
        if prompt >= limit:
            raise BadRequest(f"this model's maximum context length is {limit} tokens; the prompt has {prompt} "
                             "tokens, leaving none to generate", "messages" if isinstance(request, ChatRequest)
                             else "prompt")
        if asked is None:
            return min(DEFAULT_COMPLETION_TOKENS, limit - prompt) if isinstance(request, CompletionRequest) else (
                limit - prompt)
        if prompt + asked > limit:
            raise BadRequest(f"this model's maximum context length is {limit} tokens; you requested "
                             f"{prompt + asked} tokens ({prompt} in the prompt, {asked} to generate)", param)
        return asked

    def generation(self, request: CompletionRequest | ChatRequest, prompt: list[int], arrival: float) -> Generation:
        """Queue the request in the engine (QueueFull beyond the waiting bound)."""
        params = SamplingParams(temperature=request.temperature, top_p=request.top_p, seed=request.seed,
                                stop_tokens=frozenset() if request.ignore_eos else self.eos)
        gen = Generation(self.engine, TextStream(self.tokenizer, request.stops()), len(prompt))
        gen.rid = self.engine.submit(prompt, self.max_new(request, len(prompt)), params, arrival, gen.push)
        return gen


class Generation:
    """One request on the event loop: tokens arrive from the engine (coalesced while the client reads
    slowly: what waits is bounded by the request's `max_tokens`), text goes out."""

    def __init__(self, engine: Engine, text: TextStream, prompt_tokens: int) -> None:
        self.engine, self.text, self.prompt_tokens = engine, text, prompt_tokens
        self.rid = 0
        self._pending: list[int] = []
        self.finish: str | None = None
        self.error: str | None = None
        self.completion_tokens = 0
        self._ended = False  # the engine is done with it (finished, failed or cancelled)
        self._event = asyncio.Event()

    def push(self, update: Update) -> None:
        self._pending.extend(update.tokens)
        if update.finish is not None or update.error is not None:
            self.finish, self.error, self._ended = update.finish, update.error, True
        self._event.set()

    def wake(self) -> None:
        """Stop waiting (the client left)."""
        self._event.set()

    @property
    def done(self) -> bool:
        return self.error is not None or (self._ended and not self._pending) or self.text.stopped

    async def next_text(self) -> str:
        """Text generated since the last call (may be empty when only held-back text came)."""
        if not self._pending and not self._ended:
            await self._event.wait()
        self._event.clear()
        tokens, self._pending = self._pending, []
        for token in tokens:
            self.completion_tokens += 1
            self.text.add(token)
            if self.text.stopped:
                self.finish = "stop"
                self.cancel(finished=True)
                break
        if self._ended and not self._pending:
            self.text.flush()
        return self.text.take(final=self.done)

    def cancel(self, finished: bool = False) -> None:
        if not self._ended:
            self._ended = True
            self.engine.cancel(self.rid, finished)


def eos_ids(loaded: Loaded) -> frozenset[int]:
    """End-of-sequence tokens: the tokenizer's and those the model's generation config names."""
    ids: set[int] = set()
    tokenizer_eos = getattr(loaded.tokenizer, "eos_token_id", None)
    if isinstance(tokenizer_eos, int):
        ids.add(tokenizer_eos)
    config_eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif isinstance(config_eos, list):
        ids.update(i for i in config_eos if isinstance(i, int))
    return frozenset(ids)


def kv_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of a transformers model's text part."""
    config = _text_config(model)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return int(config.num_hidden_layers), kv_heads, head_dim


def _text_config(model: torch.nn.Module) -> Any:
    return getattr(model, "config").get_text_config()  # noqa: B009 (a transformers model's config)


def kv_bytes_per_token(model: torch.nn.Module) -> int:
    layers, kv_heads, head_dim = kv_shape(model)
    return 2 * layers * kv_heads * head_dim * next(model.parameters()).dtype.itemsize


def memory_bytes(device: torch.device) -> int:
    """Memory the KV cache may take a share of: the device's free memory, or the container's limit
    (else the machine's memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_MEMORY.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def build(loaded: Loaded, settings: ServerSettings, registry: CollectorRegistry) -> LanguageModel:
    """Switch the model to paged attention, allocate the cache and make the engine (not started)."""
    model = loaded.model
    attention.register()
    model.set_attn_implementation(attention.PAGED)  # type: ignore[operator]
    if model.config._attn_implementation != attention.PAGED:  # type: ignore[union-attr]
        raise Unsupported(f"{type(model).__name__} cannot switch its attention implementation")
    config = _text_config(model)
    param = next(model.parameters())
    per_token = kv_bytes_per_token(model)
    max_len = loaded.max_length or int(getattr(config, "max_position_embeddings", 2048))
    budget = settings.kv_cache_bytes or min(memory_bytes(param.device) // MEMORY_SHARE,
                                            settings.llm_max_running * max_len * per_token)
    blocks = budget // (per_token * settings.kv_block_tokens)
    if blocks < 1:
        raise Unsupported(f"a KV cache of {budget} bytes holds no block of {settings.kv_block_tokens} tokens "
                          f"({per_token} bytes per token)")
    layers, kv_heads, head_dim = kv_shape(model)
    cache = attention.KVCache.allocate(layers, blocks, settings.kv_block_tokens, kv_heads, head_dim, param.dtype,
                                       param.device)
    engine = Engine(model, cache, EngineConfig(
        num_blocks=blocks, block_tokens=settings.kv_block_tokens, max_running=settings.llm_max_running,
        step_tokens=settings.llm_step_tokens, max_waiting=settings.llm_max_waiting, max_len=max_len,
        prefix_caching=settings.prefix_caching), TokenMetrics(registry, settings.model_name))
    log.info("language model: %d KV-cache blocks of %d tokens (%.1f MiB), context %d", blocks,
             settings.kv_block_tokens, blocks * settings.kv_block_tokens * per_token / 2**20, max_len)
    return LanguageModel(loaded, engine, settings.model_name)


async def warm_up(lm: LanguageModel) -> None:
    """A few greedy tokens through the engine; they must be the plain forward pass's (Unsupported if not)."""
    prompt = list(range(1, WARMUP_PROMPT + 1))
    request = CompletionRequest(model=lm.name, prompt=prompt, max_tokens=WARMUP_TOKENS, temperature=0.0,
                                ignore_eos=True)
    gen = lm.generation(request, prompt, time.perf_counter())
    while not gen.done:
        await gen.next_text()
    if gen.error is not None:
        raise Unsupported(gen.error)
    gap = await asyncio.to_thread(_greedy_gap, lm.engine.model, prompt, gen.text.ids)
    if gap > WARMUP_TOLERANCE:
        raise Unsupported(f"paged attention chose tokens {gen.text.ids} the model's own forward pass scores "
                          f"{gap:.3g} below its best")


def _greedy_gap(model: torch.nn.Module, prompt: list[int], generated: list[int]) -> float:
    """How far below the best logit the model's own decoding scores the tokens the engine chose greedily
    (0: the same choices; ties allowed). The model decodes as the engine runs one stream: the prompt in
    one call, then one token a call over its own KV cache; not one pass over everything, since an int8
    model quantizes each call's activations together, so its logits depend on which tokens share a call."""
    device = next(model.parameters()).device
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    rows = []
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
        for token in [None, *generated[:-1]]:
            if token is not None:
                out = model(input_ids=torch.tensor([[token]], device=device), use_cache=True,
                            **{cache_arg: out.past_key_values})
            rows.append(out.logits[0, -1].float())
    if not generated:
        return float("inf")
    scores = torch.stack(rows)
    chosen = scores[torch.arange(len(generated)), torch.tensor(generated, device=device)]
    return float((scores.max(dim=-1).values - chosen).max())


async def prepare(loaded: Loaded, settings: ServerSettings, registry: CollectorRegistry) -> tuple[
        LanguageModel | None, str]:
    """The started, warmed-up language model of a causal LM with a tokenizer; else None and why."""
    if loaded.task != Task.CAUSAL_LM or loaded.tokenizer is None:
        return None, f"the model is not a causal language model with a tokenizer (task {loaded.task})"
    try:
        lm = await asyncio.to_thread(build, loaded, settings, registry)
    except Unsupported as e:
        log.warning("no OpenAI-compatible routes: %s", e)
        return None, str(e)
    lm.engine.start(asyncio.get_running_loop())
    try:
        await warm_up(lm)
    except Unsupported as e:
        log.warning("no OpenAI-compatible routes: %s", e)
        await asyncio.to_thread(lm.engine.stop)
        return None, str(e)
    return lm, ""
