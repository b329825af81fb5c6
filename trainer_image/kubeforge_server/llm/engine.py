"""The generation engine: one thread that runs model steps back to back while there is work. Each
step takes the requests that arrived and the cancellations (a cancelled request's blocks are free
before the next step), asks the scheduler for the step's tokens, runs the model once on all of them
(paged attention), samples a next token for every sequence whose prompt is complete, and hands the
new tokens to the event loop in one call. The loop side (`submit`, `cancel`) never waits for the
engine: a request beyond the waiting bound is refused at once (`QueueFull`)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import STEP_ARG, KVCache, Prefill, StepLayout
from .blocks import BlockPool
from .metrics import TokenMetrics
from .sampling import Sampler, SamplingParams
from .scheduler import Scheduler, Sequence, Work

log = logging.getLogger("kubeforge_server")


class QueueFull(Exception):
    """More requests wait than the bound allows."""


@dataclass(frozen=True)
class EngineConfig:
    num_blocks: int
    block_tokens: int
    max_running: int
    step_tokens: int
    max_waiting: int
    max_len: int  # tokens of a sequence, prompt and generated (the model's context)
    prefix_caching: bool


@dataclass(frozen=True)
class Update:
    """New tokens of a request; `finish` ("stop", "length") or `error` when it ended."""

    rid: int
    tokens: list[int]
    finish: str | None = None
    error: str | None = None


Sink = Callable[[Update], None]


class Engine:
    def __init__(self, model: torch.nn.Module, cache: KVCache, config: EngineConfig, metrics: TokenMetrics) -> None:
        self.model, self.cache, self.config, self.metrics = model, cache, config, metrics
        self.device = cache.keys[0].device
        self.pool = BlockPool(config.num_blocks, config.block_tokens, config.prefix_caching)
        self.scheduler = Scheduler(self.pool, config.max_running, config.step_tokens)
        self.sampler = Sampler()
        self._ids = itertools.count(1)
        self._sinks: dict[int, Sink] = {}  # loop thread only
        self._seqs: dict[int, Sequence] = {}  # engine thread only
        self._inbox: list[tuple[Sequence | int, bool]] = []  # (new sequence | rid to drop, finished)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def waiting(self) -> int:
        return len(self.scheduler.waiting) + sum(1 for item, _ in self._inbox if isinstance(item, Sequence))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="llm-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, tokens: list[int], max_new: int, params: SamplingParams, arrival: float, sink: Sink) -> int:
        """Queue a request (loop thread); its updates go to `sink` on the loop."""
        if self.waiting >= self.config.max_waiting:
            raise QueueFull(f"{self.waiting} requests are waiting already (at most {self.config.max_waiting})")
        rid = next(self._ids)
        seq = Sequence(rid, list(tokens), len(tokens), max_new, params, arrival)
        self._sinks[rid] = sink
        with self._wake:
            self._inbox.append((seq, False))
            self._wake.notify()
        return rid

    def cancel(self, rid: int, finished: bool = False) -> None:
        """Drop a request (loop thread): its client left, or (`finished`) its text reached a stop string."""
        if self._sinks.pop(rid, None) is None:
            return
        with self._wake:
            self._inbox.append((rid, finished))
            self._wake.notify()

    def _run(self) -> None:
        with torch.inference_mode():
            while self._take_inbox():
                work = self.scheduler.schedule()
                self._observe_admissions()
                if work:
                    self._step(work)
                self._gauges()

    def _take_inbox(self) -> bool:
        """Apply arrivals and cancellations; wait while there is nothing to do. False: stop."""
        with self._wake:
            while not self._inbox and not self._stopping and not self.scheduler.has_work():
                self._wake.wait()
            items, self._inbox = self._inbox, []
        for item, finished in items:
            if isinstance(item, Sequence):
                self._seqs[item.rid] = item
                self.scheduler.add(item)
                continue
            seq = self._seqs.pop(item, None)
            if seq is not None and self.scheduler.remove(seq):
                self.sampler.forget(seq.rid)
                if finished:
                    self.metrics.e2e.observe(time.perf_counter() - seq.arrival)
        return not self._stopping

    def _step(self, work: list[Work]) -> None:
        try:
            tokens = self._forward(work)
        except Exception as e:  # the model failed: the requests of this step end with the reason
            log.exception("model step failed")
            self._fail([w.seq for w in work], f"{type(e).__name__}: {e}")
            return
        self.scheduler.computed(work)
        self._publish(self._advance([w for w in work if w.samples], tokens))

    def _forward(self, work: list[Work]) -> list[int]:
        self.cache.zero_below(self.pool.touched)  # blocks used for the first time hold no stray NaN
        ids, positions, layout, rows = build_layout(work, self.cache, self.device)
        keep = torch.tensor(rows or [len(ids) - 1], device=self.device)
        out = self.model(input_ids=torch.tensor([ids], device=self.device),
                         position_ids=torch.tensor([positions], device=self.device),
                         use_cache=False, logits_to_keep=keep, **{STEP_ARG: layout})
        if not rows:
            return []
        sampled = [w.seq for w in work if w.samples]
        return self.sampler.sample(out.logits[0], [s.rid for s in sampled], [s.params for s in sampled])

    def _advance(self, sampled: list[Work], tokens: list[int]) -> list[Update]:
        now = time.perf_counter()
        updates = []
        for w, token in zip(sampled, tokens, strict=True):
            seq = w.seq
            seq.tokens.append(token)
            if seq.first_token_at is None:
                seq.first_token_at = now
                self.metrics.ttft.observe(now - seq.arrival)
            else:
                self.metrics.itl.observe(now - seq.last_token_at)
            seq.last_token_at = now
            finish = None
            if token in seq.params.stop_tokens:
                finish = "stop"
            elif seq.generated >= seq.max_new or len(seq.tokens) >= self.config.max_len:
                finish = "length"
            if finish is not None:
                self._finish(seq)
                self.metrics.e2e.observe(now - seq.arrival)
            updates.append(Update(seq.rid, [token], finish))
        self.metrics.generation_tokens.inc(len(tokens))
        return updates

    def _finish(self, seq: Sequence) -> None:
        self.scheduler.remove(seq)
        self._seqs.pop(seq.rid, None)
        self.sampler.forget(seq.rid)

    def _fail(self, seqs: list[Sequence], why: str) -> None:
        for seq in seqs:
            self._finish(seq)
        self._publish([Update(s.rid, [], error=why) for s in seqs])

    def _publish(self, updates: list[Update]) -> None:
        if updates and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, updates)

    def _deliver(self, updates: list[Update]) -> None:
        for u in updates:
            sink = self._sinks.get(u.rid)
            if sink is None:
                continue
            if u.finish is not None or u.error is not None:
                del self._sinks[u.rid]
            sink(u)

    def _observe_admissions(self) -> None:
        for a in self.scheduler.admitted:
            if a.first:
                self.metrics.prompt_tokens.inc(a.seq.prompt_len)
            if self.pool.caching:
                self.metrics.prefix_queries.inc(len(a.seq.tokens))
                self.metrics.prefix_hits.inc(a.cached_tokens)
        preempted = self.scheduler.preempted
        if preempted:
            self.metrics.preemptions.inc(preempted)
            self.scheduler.preempted = 0

    def _gauges(self) -> None:
        m, pool = self.metrics, self.pool
        m.running.set(len(self.scheduler.running))
        m.waiting.set(len(self.scheduler.waiting))
        m.kv_usage.set(pool.used / pool.num_blocks)
        slots = pool.used * pool.block_tokens
        empty = sum(len(s.blocks) * pool.block_tokens - s.computed for s in self.scheduler.running)
        m.kv_waste.set(empty / slots if slots else 0.0)


def build_layout(work: list[Work], cache: KVCache, device: torch.device) -> tuple[
        list[int], list[int], StepLayout, list[int]]:
    """(token ids, positions, layout, rows whose output is sampled) of a step, packed in one row."""
    bs = cache.block_tokens
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    decodes: list[tuple[int, list[int], int]] = []  # (row, block table, tokens visible)
    prefills: list[Prefill] = []
    rows: list[int] = []
    for w in work:
        row, end, seq = len(ids), w.start + w.count, w.seq
        ids.extend(seq.tokens[w.start:end])
        positions.extend(range(w.start, end))
        slots.extend(seq.blocks[p // bs] * bs + p % bs for p in range(w.start, end))
        table = seq.blocks[:-(-end // bs)]
        if w.count == 1:
            decodes.append((row, table, end))
        else:
            mask = torch.arange(len(table) * bs)[None, :] <= torch.arange(w.start, end)[:, None]
            prefills.append(Prefill(row, w.count, torch.tensor(table, device=device), mask.to(device)))
        if w.samples:
            rows.append(end - 1 - w.start + row)
    layout = StepLayout(cache, torch.tensor(slots, device=device), None, None, None, prefills)
    if decodes:
        width = max(len(t) for _, t, _ in decodes)
        layout.decode_rows = torch.tensor([r for r, _, _ in decodes], device=device)
        layout.decode_blocks = torch.tensor([t + [0] * (width - len(t)) for _, t, _ in decodes], device=device)
        seen = torch.tensor([n for _, _, n in decodes])
        layout.decode_mask = (torch.arange(width * bs)[None, :] < seen[:, None])[:, None, None, :].to(device)
    return ids, positions, layout, rows
