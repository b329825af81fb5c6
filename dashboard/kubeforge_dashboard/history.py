"""Throughput and latency of each ServingJob over time, from the successive scrapes the serving page
makes while someone watches it: one point per interval between two scrapes (its request rate, error
rate and p50/p99 latency, what `rate()` and `histogram_quantile()` give in Prometheus; for a language
model also its token rates, time to first token, inter-token latency, prefix-cache hit rate, and the
KV-cache usage and queue as scraped at the interval's end).

Bounded and in memory: at most `points` per job (the oldest go first) and `jobs` jobs (the one
updated longest ago goes first), shared by every session of the process, so a page opened later
shows the recent past. It is no time-series database: nothing is kept across restarts, and there
are points only while a page refreshes (a Prometheus scraping the servers is the durable record).
Thread-safe: sessions run in their own threads."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass

from .metrics import LatencyView, Scrape, TokenView, combine, interval, latency_view

POINTS = 360  # 30 minutes at the default 5 s refresh
JOBS = 64
MIN_INTERVAL_SECONDS = 1.0  # two sessions refreshing together make no sub-second points


@dataclass(frozen=True)
class TokenPoint:
    """A language model's interval: rates and percentiles over it (None: nothing observed in it, or a
    replica restarted), gauges at its end."""

    generation_per_second: float | None
    prompt_per_second: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    itl_p50_ms: float | None
    prefix_hit_rate: float | None
    kv_usage_mean: float | None
    kv_usage_max: float | None
    running: int
    waiting: int


@dataclass(frozen=True)
class Point:
    time: float  # end of the interval, seconds since the epoch
    requests_per_second: float
    errors_per_second: float
    p50_ms: float | None  # None: no request in the interval
    p99_ms: float | None
    tokens: TokenPoint | None = None  # the servers export no token metrics


class ServingHistory:
    def __init__(self, points: int = POINTS, jobs: int = JOBS, min_interval: float = MIN_INTERVAL_SECONDS) -> None:
        self.points, self.jobs, self.min_interval = points, jobs, min_interval
        self._lock = threading.Lock()
        self._last: OrderedDict[str, tuple[float, dict[str, Scrape]]] = OrderedDict()
        self._series: dict[str, deque[Point]] = {}

    def add(self, key: str, scrapes: Scrape | Mapping[str, Scrape]) -> tuple[LatencyView, list[Point]]:
        """Record the scrapes of job `key` (one per replica, by pod name; or one for all); the view since the
        previous scrape and the job's points so far. An interval counts the replicas scraped at both ends
        whose counters did not go back (`metrics.interval`)."""
        per = {"": scrapes} if isinstance(scrapes, Scrape) else dict(scrapes)
        now = combine(list(per.values()))
        with self._lock:
            last = self._last.get(key)
            pair = interval(per, last[1]) if last is not None else None
            cur, prev = pair if pair is not None else (now, None)
            view = latency_view(cur, prev, now)
            if last is None or now.time - last[0] >= self.min_interval:
                point = _point(cur, prev, view)
                series = self._series.setdefault(key, deque(maxlen=self.points))
                if point is not None:
                    series.append(point)
                self._last[key] = (now.time, per)
                self._last.move_to_end(key)
                while len(self._last) > self.jobs:
                    gone, _ = self._last.popitem(last=False)
                    self._series.pop(gone, None)
            return view, list(self._series.get(key, ()))

    def series(self, key: str) -> list[Point]:
        with self._lock:
            return list(self._series.get(key, ()))


def _point(cur: Scrape, prev: Scrape | None, view: LatencyView) -> Point | None:
    """The interval since `prev` as a point, None when there is no usable interval."""
    if prev is None or view.rate_per_second is None:
        return None
    seconds = cur.time - prev.time
    errors = max(cur.errors - prev.errors, 0.0) / seconds
    measured = view.window != "since start"  # percentiles of this interval, not of the servers' lifetime
    return Point(cur.time, view.rate_per_second, errors, view.p50_ms if measured else None,
                 view.p99_ms if measured else None, _token_point(view.tokens))


def _token_point(t: TokenView | None) -> TokenPoint | None:
    """The interval's token metrics; rates and percentiles only when they are of this interval."""
    if t is None:
        return None
    rates = t.generation_per_second is not None  # None: no usable interval (a replica restarted)
    measured = rates and t.window != "since start"
    hits = t.prefix_hit_rate if (t.prefix_queries_per_second or 0) > 0 else None  # of this interval only
    return TokenPoint(t.generation_per_second, t.prompt_per_second, t.ttft_p50_ms if measured else None,
                      t.ttft_p99_ms if measured else None, t.itl_p50_ms if measured else None,
                      hits, t.kv_usage_mean, t.kv_usage_max, t.running, t.waiting)
