"""Dynamic batching. Requests queue here; one task takes whatever is queued (up to `max_batch` rows
of one trailing shape: of each named input, for a request of several), runs the model once in a
single worker thread, and hands each caller its own rows back (of each named output). With
`max_delay` 0 the batch leaves at once when the model is idle (opportunistic: no added latency at
low load, batches form while the model is busy); a positive delay waits up to that long for a
fuller batch. A full queue raises `Unavailable`; a caller that waits past its
timeout gets `Timeout`, and its rows are dropped if they have not reached the model yet."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import Timeout, Unavailable
from .metrics import Metrics

Batch = np.ndarray | dict[str, np.ndarray]  # one tensor, or named tensors with the same rows
RunFn = Callable[[Any], Any]  # Batch -> Batch of the same kind


@dataclass(eq=False)  # identity: queue removal must not compare arrays
class _Item:
    x: Batch
    future: asyncio.Future[Batch]
    enqueued: float = field(default_factory=time.perf_counter)


def rows(x: Batch) -> int:
    return len(x) if isinstance(x, np.ndarray) else len(next(iter(x.values())))


def _key(x: Batch) -> object:
    """What must agree for two requests to share a batch: every input's name, dtype and trailing shape."""
    if isinstance(x, np.ndarray):
        return x.shape[1:]
    return tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(x.items()))


def _concat(xs: list[Batch]) -> Batch:
    if len(xs) == 1:
        return xs[0]
    arrays = [x for x in xs if isinstance(x, np.ndarray)]
    if arrays:
        return np.concatenate(arrays)
    named = [x for x in xs if isinstance(x, dict)]
    return {k: np.concatenate([x[k] for x in named]) for k in named[0]}


def _split(out: Batch, sizes: list[int]) -> list[Batch]:
    if len(sizes) == 1:
        return [out]
    bounds = np.cumsum(sizes)[:-1]
    if isinstance(out, np.ndarray):
        return list(np.split(out, bounds))
    parts = {k: np.split(v, bounds) for k, v in out.items()}
    return [{k: parts[k][i] for k in out} for i in range(len(sizes))]


class Batcher:
    def __init__(self, run: RunFn, metrics: Metrics, max_batch: int, max_delay_s: float, max_queue: int) -> None:
        self._run, self._metrics = run, metrics
        self._max_batch, self._max_delay, self._max_queue = max_batch, max_delay_s, max_queue
        self._queue: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._task: asyncio.Task[None] | None = None
        self.busy = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, x: Batch, timeout_s: float) -> Batch:
        """The model's output for `x` (rows in, rows out), computed in some batch."""
        if len(self._queue) >= self._max_queue:
            raise Unavailable(f"the queue is full ({self._max_queue} requests waiting); retry shortly")
        item = _Item(x, asyncio.get_running_loop().create_future())
        self._queue.append(item)
        self._metrics.queue_depth.set(len(self._queue))
        self._arrived.set()
        try:
            return await asyncio.wait_for(item.future, timeout_s)
        except TimeoutError:
            if item in self._queue:  # never reached the model: free its place in the queue
                self._queue.remove(item)
                self._metrics.queue_depth.set(len(self._queue))
            raise Timeout(f"no answer within {timeout_s:g} s (requestTimeoutSeconds)") from None

    def run_now(self, x: Batch) -> Batch:
        """Run the model outside the queue (warm-up), on the model thread."""
        out: Batch = self._pool.submit(self._run, x).result()
        return out

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            batch = await self._collect()
            if not batch:
                continue
            start = time.perf_counter()
            for item in batch:
                self._metrics.queue_seconds.observe(start - item.enqueued)
            xs = [item.x for item in batch]
            self.busy = True
            try:
                out = await loop.run_in_executor(self._pool, self._run_batch, xs)
            except Exception as e:  # the model failed on valid input: every caller learns why
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            finally:
                self.busy = False
            self._metrics.inference_seconds.observe(time.perf_counter() - start)
            self._metrics.batch_size.observe(sum(rows(x) for x in xs))
            self._deliver(batch, out)

    async def _collect(self) -> list[_Item]:
        """Queued items of one trailing shape, up to max_batch rows; waits up to max_delay for more."""
        batch: list[_Item] = []
        taken = 0
        deadline = time.perf_counter() + self._max_delay
        while True:
            taken = self._take(batch, taken)
            left = deadline - time.perf_counter()
            if taken >= self._max_batch or left <= 0 or self._queue:  # a non-empty queue cannot join
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        self._metrics.queue_depth.set(len(self._queue))
        return batch

    def _take(self, batch: list[_Item], taken: int) -> int:
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # timed out before it reached the model
                self._queue.popleft()
                continue
            if batch and (_key(head.x) != _key(batch[0].x) or taken + rows(head.x) > self._max_batch):
                break
            batch.append(self._queue.popleft())
            taken += rows(head.x)
        return taken

    def _run_batch(self, xs: list[Batch]) -> list[Batch]:
        return _split(self._run(_concat(xs)), [rows(x) for x in xs])

    def _deliver(self, batch: list[_Item], outputs: list[Batch]) -> None:
        for item, out in zip(batch, outputs, strict=True):
            if not item.future.done():
                item.future.set_result(out)
