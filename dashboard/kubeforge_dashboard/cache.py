"""A `Source` that remembers answers for a short time: every browser session and every auto-refresh
within `ttl` seconds shares one read. Written here rather than with `st.cache_data` because that
copies (pickles) every answer per caller, which costs more than the read for a 500-job overview,
and because the benchmark and tests use the same cache outside Streamlit. Failures are not
remembered: the next refresh tries again. Logs are never cached (one pod, read on demand)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from kubeforge_api.servingjob import ServingJob
from kubeforge_api.trainingjob import TrainingJob

from .source import EventInfo, Listing, NodeInfo, PodInfo, Queues, Source, Usage

R = TypeVar("R")


class CachingSource:
    def __init__(self, inner: Source, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, Any]] = {}

    @property
    def description(self) -> str:
        return self.inner.description

    def _cached(self, key: Hashable, read: Callable[[], R]) -> R:
        now = self.clock()
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and now - hit[0] < self.ttl:
                value: R = hit[1]
                return value
        value = read()
        with self._lock:
            self._entries[key] = (now, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def namespaces(self) -> list[str]:
        return self._cached(("namespaces",), self.inner.namespaces)

    def training_jobs(self, namespaces: tuple[str, ...]) -> Listing[TrainingJob]:
        return self._cached(("tjs", namespaces), lambda: self.inner.training_jobs(namespaces))

    def serving_jobs(self, namespaces: tuple[str, ...]) -> Listing[ServingJob]:
        return self._cached(("sjs", namespaces), lambda: self.inner.serving_jobs(namespaces))

    def training_job(self, namespace: str, name: str) -> TrainingJob:
        return self._cached(("tj", namespace, name), lambda: self.inner.training_job(namespace, name))

    def serving_job(self, namespace: str, name: str) -> ServingJob:
        return self._cached(("sj", namespace, name), lambda: self.inner.serving_job(namespace, name))

    def pods(self, namespace: str, selector: dict[str, str]) -> list[PodInfo]:
        key = ("pods", namespace, tuple(sorted(selector.items())))
        return self._cached(key, lambda: self.inner.pods(namespace, selector))

    def events(self, namespace: str, names: frozenset[str]) -> list[EventInfo]:
        return self._cached(("events", namespace, names), lambda: self.inner.events(namespace, names))

    def logs(self, namespace: str, pod: str, container: str | None, previous: bool, tail: int) -> str:
        return self.inner.logs(namespace, pod, container, previous, tail)

    def nodes(self) -> list[NodeInfo]:
        return self._cached(("nodes",), self.inner.nodes)

    def usage(self, selector: dict[str, str]) -> Usage | None:
        return self._cached(("usage", tuple(sorted(selector.items()))), lambda: self.inner.usage(selector))

    def queues(self) -> Queues | None:
        return self._cached(("queues",), self.inner.queues)
