"""The KV cache's block allocator with prefix caching. The cache is `num_blocks` fixed-size blocks;
a sequence holds a list of them (its block table). A block filled with tokens gets a hash that
chains the hash of the block before it with its own tokens, so equal hashes mean equal prefixes;
another sequence whose prompt starts with the same tokens shares the block instead of computing it
again. A block nobody holds any more keeps its hash and contents until it is needed for something
else (least recently released first), so a prefix outlives the requests that computed it.

Hashes are cryptographic (BLAKE2b): a client must not be able to make its prompt collide with
another client's prefix and read that client's keys and values."""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence

ROOT_HASH = b""


def block_hash(parent: bytes, tokens: Sequence[int]) -> bytes:
    """The hash of a full block of `tokens` that follows the block hashed `parent` (ROOT_HASH: first)."""
    return hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()


def prefix_hashes(tokens: Sequence[int], block_tokens: int, blocks: int) -> list[bytes]:
    """The chained hashes of the first `blocks` full blocks of `tokens`."""
    hashes: list[bytes] = []
    parent = ROOT_HASH
    for i in range(blocks):
        parent = block_hash(parent, tokens[i * block_tokens:(i + 1) * block_tokens])
        hashes.append(parent)
    return hashes


class BlockPool:
    """Blocks with reference counts; free blocks without a hash first, then cached ones (LRU)."""

    def __init__(self, num_blocks: int, block_tokens: int, caching: bool) -> None:
        self.num_blocks, self.block_tokens, self.caching = num_blocks, block_tokens, caching
        self._refs = [0] * num_blocks
        self._hash: list[bytes | None] = [None] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._cached: OrderedDict[int, None] = OrderedDict()  # held by nobody, hash kept; oldest first
        self._by_hash: dict[bytes, int] = {}
        self.touched = 0  # blocks [0, touched) have been handed out at least once (the free list starts in order)

    @property
    def available(self) -> int:
        """Blocks that can be allocated now (free, or cached and held by nobody)."""
        return len(self._free) + len(self._cached)

    @property
    def used(self) -> int:
        """Blocks held by at least one sequence."""
        return self.num_blocks - self.available

    def lookup(self, hashes: Sequence[bytes]) -> list[int]:
        """The cached blocks of the longest prefix of `hashes`."""
        found: list[int] = []
        if not self.caching:
            return found
        for h in hashes:
            block = self._by_hash.get(h)
            if block is None:
                break
            found.append(block)
        return found

    def reclaimable(self, blocks: Sequence[int]) -> int:
        """How many of `blocks` are held by nobody (acquiring them uses up available blocks)."""
        return sum(1 for b in blocks if self._refs[b] == 0)

    def acquire(self, blocks: Sequence[int]) -> None:
        """Hold cached blocks (a prefix hit)."""
        for b in blocks:
            if self._refs[b] == 0:
                del self._cached[b]
            self._refs[b] += 1

    def allocate(self) -> int:
        """A block to write into; evicts the least recently released cached block when none is free."""
        if self._free:
            block = self._free.popleft()
        else:
            block, _ = self._cached.popitem(last=False)
            old = self._hash[block]
            if old is not None and self._by_hash.get(old) == block:
                del self._by_hash[old]
            self._hash[block] = None
        self._refs[block] = 1
        self.touched = max(self.touched, block + 1)
        return block

    def release(self, blocks: Sequence[int]) -> None:
        """Let go of a sequence's blocks, its last block first (so prefixes are evicted last)."""
        for b in reversed(blocks):
            self._refs[b] -= 1
            if self._refs[b] == 0:
                if self._hash[b] is not None:
                    self._cached[b] = None
                else:
                    self._free.append(b)

    def register(self, block: int, digest: bytes) -> None:
        """Record that `block` is full and holds the prefix hashed `digest`."""
        if self.caching and self._hash[block] is None and digest not in self._by_hash:
            self._hash[block] = digest
            self._by_hash[digest] = block
