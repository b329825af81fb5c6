"""Which tokens the next model step computes (continuous batching). Every step has a token budget;
running sequences that decode get one token each first, then running sequences still reading their
prompt get a chunk of it (chunked prefill), then waiting sequences join the batch, oldest first,
while the budget, the batch size and the KV cache allow: a sequence joins only when the blocks its
prompt needs (less the blocks a cached prefix already holds) are available. A sequence that needs a
block when none is left preempts the newest running sequence not yet in the step: that one frees
its blocks and waits again at the head of the queue, to be recomputed (its prefix is likely still
cached). Pure bookkeeping: no tensors here."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .blocks import ROOT_HASH, BlockPool, block_hash, prefix_hashes
from .sampling import SamplingParams


@dataclass(eq=False)
class Sequence:
    """One request's generation: its tokens (prompt, then generated) and what of them is cached."""

    rid: int
    tokens: list[int]
    prompt_len: int
    max_new: int
    params: SamplingParams
    arrival: float
    computed: int = 0  # tokens whose keys and values are in the cache
    blocks: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)  # of the full blocks, in order
    admitted_once: bool = False
    first_token_at: float | None = None
    last_token_at: float = 0.0

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def pending(self) -> int:
        """Tokens to compute before the next token can be sampled."""
        return len(self.tokens) - self.computed


@dataclass(frozen=True)
class Work:
    seq: Sequence
    start: int  # position of the first token computed
    count: int

    @property
    def samples(self) -> bool:
        """This step computes the sequence's last token: the model's output there is the next token."""
        return self.start + self.count == len(self.seq.tokens)


@dataclass
class Admission:
    """What admitting a sequence did (for the metrics)."""

    seq: Sequence
    first: bool
    cached_tokens: int


class Scheduler:
    def __init__(self, pool: BlockPool, max_running: int, step_tokens: int) -> None:
        self.pool, self.max_running, self.step_tokens = pool, max_running, step_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.admitted: list[Admission] = []  # by the last `schedule`
        self.preempted = 0  # sequences preempted so far

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[Work]:
        """The work of the next step (empty when there is nothing to do)."""
        budget = self.step_tokens
        work: list[Work] = []
        self.admitted = []
        preempted = self._continue(work, budget)
        budget -= sum(w.count for w in work)
        if not preempted:
            self._admit(work, budget)
        return work

    def _continue(self, work: list[Work], budget: int) -> bool:
        """Running sequences: decodes first, then prompt chunks. True if one was preempted."""
        preempted = False
        decoding = [s for s in self.running if s.pending == 1]
        prefilling = [s for s in self.running if s.pending > 1]
        for seq in decoding + prefilling:
            if budget <= 0 or seq not in self.running:
                continue
            count = min(seq.pending, budget)
            grown, victims = self._grow(seq, count, {w.seq for w in work})
            preempted = preempted or victims
            if grown:
                work.append(Work(seq, seq.computed, count))
                budget -= count
        return preempted

    def _admit(self, work: list[Work], budget: int) -> None:
        bs = self.pool.block_tokens
        while self.waiting and budget > 0 and len(self.running) < self.max_running:
            seq = self.waiting[0]
            usable = (len(seq.tokens) - 1) // bs  # the last token is always computed: its output is needed
            hashes = prefix_hashes(seq.tokens, bs, usable) if self.pool.caching else []
            hits = self.pool.lookup(hashes)
            needed = -(-len(seq.tokens) // bs) - len(hits)
            if needed > self.pool.available - self.pool.reclaimable(hits):
                return
            self.waiting.popleft()
            self.pool.acquire(hits)
            seq.blocks, seq.computed = list(hits), len(hits) * bs
            seq.hashes = hashes[:len(hits)]
            self.admitted.append(Admission(seq, not seq.admitted_once, seq.computed))
            seq.admitted_once = True
            self.running.append(seq)
            count = min(seq.pending, budget)
            grown, _ = self._grow(seq, count, set())
            if grown:
                work.append(Work(seq, seq.computed, count))
                budget -= count

    def _grow(self, seq: Sequence, count: int, scheduled: set[Sequence]) -> tuple[bool, bool]:
        """Blocks for `count` more tokens of `seq`, preempting newer sequences if need be:
        (whether `seq` got them, whether anything was preempted)."""
        needed = -(-(seq.computed + count) // self.pool.block_tokens) - len(seq.blocks)
        preempted = False
        while self.pool.available < needed:
            victims = [s for s in self.running if s is not seq and s not in scheduled]
            if not victims:
                return False, preempted
            self.preempt(victims[-1])
            preempted = True
        seq.blocks.extend(self.pool.allocate() for _ in range(needed))
        return True, preempted

    def preempt(self, seq: Sequence) -> None:
        """Free a running sequence's blocks; it waits first in line to be computed again."""
        self.running.remove(seq)
        self.pool.release(seq.blocks)
        seq.blocks, seq.hashes, seq.computed = [], [], 0
        self.waiting.appendleft(seq)
        self.preempted += 1

    def computed(self, step: list[Work]) -> None:
        """After a step: the tokens are in the cache; full blocks get their prefix hash."""
        bs = self.pool.block_tokens
        for w in step:
            seq = w.seq
            seq.computed = w.start + w.count
            while len(seq.hashes) < seq.computed // bs:
                i = len(seq.hashes)
                digest = block_hash(seq.hashes[-1] if seq.hashes else ROOT_HASH, seq.tokens[i * bs:(i + 1) * bs])
                self.pool.register(seq.blocks[i], digest)
                seq.hashes.append(digest)

    def remove(self, seq: Sequence) -> bool:
        """A finished or cancelled sequence leaves, freeing its blocks; False if it was not here."""
        if seq in self.running:
            self.running.remove(seq)
            self.pool.release(seq.blocks)
            seq.blocks = []
            return True
        if seq in self.waiting:
            self.waiting.remove(seq)
            return True
        return False
