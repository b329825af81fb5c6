"""The dynamic batcher in-process: opportunistic batches form only while the model is busy, a delay
waits for a fuller batch, every caller gets its own rows, and a full queue is refused."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from kubeforge_server.batcher import Batcher
from kubeforge_server.errors import Unavailable
from kubeforge_server.metrics import Metrics


class Model:
    """Doubles its input; the first call blocks until released, to hold the model busy."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.batches: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.batches:
            self.release.wait(10)
        self.batches.append(len(x))
        return x * 2


async def _until(predicate: object, what: str) -> None:
    for _ in range(1000):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(what)


def test_opportunistic_batches_form_while_busy_and_route_rows() -> None:
    async def run() -> None:
        model = Model()
        b = Batcher(model, Metrics(), max_batch=8, max_delay_s=0, max_queue=3)
        b.start()
        first = asyncio.ensure_future(b.submit(np.array([[1.0]]), 10))
        await _until(lambda: b.depth == 0 and b.busy, "first request never reached the model")
        rest = [asyncio.ensure_future(b.submit(np.array([[float(i)], [float(i) + 0.5]]), 10)) for i in range(2, 5)]
        await _until(lambda: b.depth == 3, "requests never queued")
        with pytest.raises(Unavailable):  # maxQueueDepth requests are already waiting
            await b.submit(np.array([[9.0]]), 10)
        model.release.set()
        assert (await first).tolist() == [[2.0]]
        for i, fut in zip(range(2, 5), rest, strict=True):
            assert (await fut).tolist() == [[2.0 * i], [2.0 * i + 1]]
        assert model.batches == [1, 6]  # the lone request left at once; the others queued into one batch
        await b.stop()

    asyncio.run(run())


def test_delay_waits_for_a_full_batch() -> None:
    async def run() -> None:
        model = Model()
        model.release.set()
        b = Batcher(model, Metrics(), max_batch=2, max_delay_s=30, max_queue=4)
        b.start()
        a = asyncio.ensure_future(b.submit(np.array([[1.0]]), 10))
        await asyncio.sleep(0.05)
        assert not a.done()  # waiting for a second row (the delay is 30 s)
        c = asyncio.ensure_future(b.submit(np.array([[3.0]]), 10))
        assert (await a).tolist() == [[2.0]] and (await c).tolist() == [[6.0]]
        assert model.batches == [2]
        await b.stop()

    asyncio.run(run())
