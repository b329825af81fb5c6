"""Request rate and latency percentiles from the inference servers' Prometheus `/metrics`, parsed
with prometheus_client's parser. A scrape is reduced to the counts the page needs (infer requests,
errors, the cumulative buckets of the `total` latency histogram); scrapes of several replicas add
up; two scrapes of the same replicas give a rate and percentiles over the time between them
(what `rate()` and `histogram_quantile()` compute in Prometheus), one scrape gives percentiles
since the servers started.

A server's exposition is the tenant's to shape, so parsing is bounded: only the lines of the two
families read here reach the parser, at most MAX_SERIES_LINES of them, within PARSE_SECONDS; and
what goes wrong is said in our words (`MetricsError`), never by quoting the text."""

from __future__ import annotations

import math
from dataclasses import dataclass
from time import monotonic

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "kubeforge_inference_requests"
LATENCY = "kubeforge_inference_latency_seconds"
INFER_ENDPOINT = "infer"
LATENCY_STAGE = "total"
# A server has a few endpoints and codes and one histogram of ~20 buckets per stage: hundreds of lines.
MAX_SERIES_LINES = 2000
PARSE_SECONDS = 0.25


class MetricsError(ValueError):
    """An exposition the dashboard will not read, in a sentence of its own (never the text's)."""


@dataclass(frozen=True)
class Scrape:
    time: float
    requests: float = 0.0  # infer requests answered, any code
    errors: float = 0.0  # infer requests answered with 5xx
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count), ascending
    count: float = 0.0
    total_seconds: float = 0.0


@dataclass(frozen=True)
class LatencyView:
    requests: int
    rate_per_second: float | None
    p50_ms: float | None
    p99_ms: float | None
    window: str  # "since start" or "last N s"
    errors: int


def _ours(text: str) -> str:
    """The lines of the families read here (samples, HELP and TYPE), at most MAX_SERIES_LINES."""
    keep: list[str] = []
    for line in text.splitlines():
        bare = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
        if bare.startswith((REQUESTS, LATENCY)):
            keep.append(line)
            if len(keep) > MAX_SERIES_LINES:
                raise MetricsError(f"more than {MAX_SERIES_LINES} series of the inference metrics: not read")
    if not keep:
        raise MetricsError("not Prometheus text with Kubeforge's inference metrics")
    return "\n".join(keep) + "\n"


def parse(text: str, time: float, budget: float = PARSE_SECONDS) -> Scrape:
    """One server's exposition scraped at `time`; MetricsError when it is not Prometheus text or
    takes more than `budget` seconds to read."""
    requests = errors = count = total = 0.0
    buckets: dict[float, float] = {}
    deadline = monotonic() + budget
    try:
        for family in text_string_to_metric_families(_ours(text)):
            if monotonic() > deadline:
                raise MetricsError(f"reading the metrics took longer than {budget:g} s: abandoned")
            for s in family.samples:
                if family.name == REQUESTS and s.name.endswith("_total") and s.labels.get("endpoint") == INFER_ENDPOINT:
                    requests += s.value
                    errors += s.value if s.labels.get("code", "").startswith("5") else 0.0
                elif family.name == LATENCY and s.labels.get("stage") == LATENCY_STAGE:
                    if s.name.endswith("_bucket"):
                        le = float(s.labels["le"])
                        buckets[le] = buckets.get(le, 0.0) + s.value
                    elif s.name.endswith("_count"):
                        count += s.value
                    elif s.name.endswith("_sum"):
                        total += s.value
    except MetricsError:
        raise
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise MetricsError("not Prometheus text") from e
    return Scrape(time, requests, errors, tuple(sorted(buckets.items())), count, total)


def combine(scrapes: list[Scrape]) -> Scrape:
    """Several replicas' scrapes as one (counts add up; the time is the latest)."""
    buckets: dict[float, float] = {}
    for s in scrapes:
        for le, n in s.buckets:
            buckets[le] = buckets.get(le, 0.0) + n
    return Scrape(max((s.time for s in scrapes), default=0.0), sum(s.requests for s in scrapes),
                  sum(s.errors for s in scrapes), tuple(sorted(buckets.items())), sum(s.count for s in scrapes),
                  sum(s.total_seconds for s in scrapes))


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus `histogram_quantile`: linear interpolation inside the bucket that holds rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return lower_bound
            if n == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (n - lower_count)
        lower_bound, lower_count = le, n
    return buckets[-1][0]


def _delta(cur: Scrape, prev: Scrape) -> tuple[tuple[float, float], ...] | None:
    before = dict(prev.buckets)
    out = tuple((le, n - before.get(le, 0.0)) for le, n in cur.buckets)
    return None if any(n < 0 for _, n in out) else out  # a counter went back: a replica restarted


def latency_view(cur: Scrape, prev: Scrape | None) -> LatencyView:
    """Rate and percentiles over the time since `prev` when it is usable, else since start."""
    buckets, window, rate = cur.buckets, "since start", None
    if prev is not None and cur.time > prev.time and cur.requests >= prev.requests:
        delta = _delta(cur, prev)
        if delta is not None:
            rate = (cur.requests - prev.requests) / (cur.time - prev.time)
            if delta and delta[-1][1] > 0:
                buckets, window = delta, f"last {cur.time - prev.time:.0f} s"
    p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
    return LatencyView(int(cur.requests), rate, None if p50 is None else p50 * 1000,
                       None if p99 is None else p99 * 1000, window, int(cur.errors))
