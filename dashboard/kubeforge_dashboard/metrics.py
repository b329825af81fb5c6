"""Request rate and latency percentiles from the inference servers' Prometheus `/metrics`, parsed
with prometheus_client's parser, and the token metrics of language-model servers (`kubeforge:`
series with vLLM's meanings). A scrape is reduced to the counts the page needs (infer requests,
errors, the cumulative buckets of the `total` latency histogram; for a language model: prompt and
generated tokens, prefix-cache queries and hits, requests running and waiting, KV-cache usage and
the time-to-first-token, inter-token and end-to-end latency histograms); scrapes of several
replicas add up; two scrapes of the same replicas give rates and percentiles over the time between
them (what `rate()` and `histogram_quantile()` compute in Prometheus), one scrape gives percentiles
since the servers started.

A server's exposition is the tenant's to shape, so parsing is bounded: only the lines of the
families read here reach the parser, at most MAX_SERIES_LINES of them, within PARSE_SECONDS; a
value that is no count (negative, not a number, beyond MAX_VALUE) or a share outside 0-1 makes the
scrape unreadable rather than a chart that lies; and what goes wrong is said in our words
(`MetricsError`), never by quoting the text.

The `kubeforge:` names are the server's (trainer_image's kubeforge_server.llm.metrics); the
dashboard does not import the server, so they are spelled here, and a component test reads a real
server's /metrics with them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from time import monotonic

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "kubeforge_inference_requests"
LATENCY = "kubeforge_inference_latency_seconds"
INFER_ENDPOINT = "infer"
LATENCY_STAGE = "total"
# Language-model token metrics (vLLM's meanings, our prefix).
TTFT = "kubeforge:time_to_first_token_seconds"
ITL = "kubeforge:inter_token_latency_seconds"
E2E = "kubeforge:e2e_request_latency_seconds"
RUNNING = "kubeforge:num_requests_running"
WAITING = "kubeforge:num_requests_waiting"
KV_USAGE = "kubeforge:kv_cache_usage_perc"
PROMPT_TOKENS = "kubeforge:prompt_tokens"
GENERATION_TOKENS = "kubeforge:generation_tokens"
PREFIX_QUERIES = "kubeforge:prefix_cache_queries"
PREFIX_HITS = "kubeforge:prefix_cache_hits"
TOKEN_HISTOGRAMS = (TTFT, ITL, E2E)
TOKEN_COUNTERS = (PROMPT_TOKENS, GENERATION_TOKENS, PREFIX_QUERIES, PREFIX_HITS)
TOKEN_GAUGES = (RUNNING, WAITING, KV_USAGE)
TOKEN_FAMILIES = frozenset((*TOKEN_HISTOGRAMS, *TOKEN_COUNTERS, *TOKEN_GAUGES))
FAMILIES = (REQUESTS, LATENCY, *sorted(TOKEN_FAMILIES))
# A server has a few endpoints and codes, one histogram of ~20 buckets per stage and, serving a language
# model, three histograms of 64 buckets: hundreds of lines.
MAX_SERIES_LINES = 2000
PARSE_SECONDS = 0.25
# No count a server reports comes near this (10^15 tokens is centuries of generation); beyond it sums
# over replicas could overflow and a chart would show nonsense.
MAX_VALUE = 1e15

Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending


class MetricsError(ValueError):
    """An exposition the dashboard will not read, in a sentence of its own (never the text's)."""


@dataclass(frozen=True)
class TokenScrape:
    """A language-model server's token metrics (or several replicas' added up)."""

    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    prefix_queries: float = 0.0  # prompt tokens looked up in the prefix cache
    prefix_hits: float = 0.0  # of those, found
    running: float = 0.0
    waiting: float = 0.0
    kv_usage: tuple[float, ...] = ()  # share of KV-cache blocks in use (0-1), one per replica that reports it
    ttft: Buckets = ()
    itl: Buckets = ()
    e2e: Buckets = ()
    replicas: int = 1


@dataclass(frozen=True)
class Scrape:
    time: float
    requests: float = 0.0  # infer requests answered, any code
    errors: float = 0.0  # infer requests answered with 5xx
    buckets: Buckets = ()
    count: float = 0.0
    total_seconds: float = 0.0
    tokens: TokenScrape | None = None  # None: the servers serve no language model


@dataclass(frozen=True)
class TokenView:
    """A language model's load: rates over the interval since the previous scrape (None with no usable
    interval), latency percentiles over `window`, gauges as scraped now (across replicas)."""

    generation_per_second: float | None
    prompt_per_second: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    itl_p50_ms: float | None
    e2e_p50_ms: float | None
    prefix_hit_rate: float | None  # share of looked-up prompt tokens found in the prefix cache (0-1): over the
    # interval when it looked any up (prefix_queries_per_second > 0), else since start
    prefix_queries_per_second: float | None
    kv_usage_mean: float | None  # 0-1, mean over the replicas
    kv_usage_max: float | None
    running: int
    waiting: int
    generation_tokens: int  # since the servers started
    window: str  # "since start" or "last N s"
    replicas: int


@dataclass(frozen=True)
class LatencyView:
    requests: int
    rate_per_second: float | None
    p50_ms: float | None
    p99_ms: float | None
    window: str  # "since start" or "last N s"
    errors: int
    tokens: TokenView | None = field(default=None)  # a language model's token metrics, when exported


def _ours(text: str) -> str:
    """The lines of the families read here (samples, HELP and TYPE), at most MAX_SERIES_LINES."""
    keep: list[str] = []
    for line in text.splitlines():
        bare = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
        if bare.startswith(FAMILIES):
            keep.append(line)
            if len(keep) > MAX_SERIES_LINES:
                raise MetricsError(f"more than {MAX_SERIES_LINES} series of the inference metrics: not read")
    if not keep:
        raise MetricsError("not Prometheus text with Kubeforge's inference metrics")
    return "\n".join(keep) + "\n"


def _count(value: float, family: str) -> float:
    """A sample's value if it can be a count or a gauge of ours; MetricsError (naming our family) if not."""
    if not (math.isfinite(value) and 0.0 <= value <= MAX_VALUE):
        raise MetricsError(f"{family} has a value that is negative, not a number or absurdly large: not read")
    return value


def _bound(labels: dict[str, str], family: str) -> float:
    try:
        le = float(labels["le"])
    except (KeyError, ValueError) as e:
        raise MetricsError(f"{family} has a bucket without a numeric upper bound: not read") from e
    if math.isnan(le) or le < 0:
        raise MetricsError(f"{family} has a bucket without a numeric upper bound: not read")
    return le


def _cumulative(buckets: dict[float, float]) -> Buckets:
    """Ascending buckets, made monotonic as Prometheus does (a count below a lower bound's is raised to it)."""
    out: list[tuple[float, float]] = []
    top = 0.0
    for le, n in sorted(buckets.items()):
        top = max(top, n)
        out.append((le, top))
    return tuple(out)


def parse(text: str, time: float, budget: float = PARSE_SECONDS) -> Scrape:
    """One server's exposition scraped at `time`; MetricsError when it is not Prometheus text, holds a
    value no count can have, or takes more than `budget` seconds to read."""
    requests = errors = count = total = 0.0
    buckets: dict[float, float] = {}
    hists: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    kv: list[float] = []
    deadline = monotonic() + budget
    try:
        for family in text_string_to_metric_families(_ours(text)):
            if monotonic() > deadline:
                raise MetricsError(f"reading the metrics took longer than {budget:g} s: abandoned")
            for s in family.samples:  # by sample name: a family without its TYPE line reads the same
                n = s.name
                if n == REQUESTS + "_total" and s.labels.get("endpoint") == INFER_ENDPOINT:
                    v = _count(s.value, REQUESTS)
                    requests += v
                    errors += v if s.labels.get("code", "").startswith("5") else 0.0
                elif n.startswith(LATENCY + "_") and s.labels.get("stage") == LATENCY_STAGE:
                    if n == LATENCY + "_bucket":
                        le = _bound(s.labels, LATENCY)
                        buckets[le] = buckets.get(le, 0.0) + _count(s.value, LATENCY)
                    elif n == LATENCY + "_count":
                        count += _count(s.value, LATENCY)
                    elif n == LATENCY + "_sum":
                        total += _count(s.value, LATENCY)
                elif n.endswith("_bucket") and n[:-7] in TOKEN_HISTOGRAMS:
                    le = _bound(s.labels, n[:-7])
                    per = hists.setdefault(n[:-7], {})
                    per[le] = per.get(le, 0.0) + _count(s.value, n[:-7])
                elif (n.endswith("_total") and n[:-6] in TOKEN_COUNTERS) or n in (RUNNING, WAITING):
                    name = n.removesuffix("_total")
                    sums[name] = sums.get(name, 0.0) + _count(s.value, name)
                elif n == KV_USAGE:
                    v = _count(s.value, n)
                    if v > 1.0 + 1e-9:
                        raise MetricsError(f"{n} is a share above 1: not read")
                    kv.append(min(v, 1.0))
    except MetricsError:
        raise
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise MetricsError("not Prometheus text") from e
    tokens = None
    if hists or sums or kv:
        ttft, itl, e2e = (_cumulative(hists.get(h, {})) for h in TOKEN_HISTOGRAMS)
        tokens = TokenScrape(prompt_tokens=sums.get(PROMPT_TOKENS, 0.0),
                             generation_tokens=sums.get(GENERATION_TOKENS, 0.0),
                             prefix_queries=sums.get(PREFIX_QUERIES, 0.0), prefix_hits=sums.get(PREFIX_HITS, 0.0),
                             running=sums.get(RUNNING, 0.0), waiting=sums.get(WAITING, 0.0),
                             kv_usage=(max(kv),) if kv else (), ttft=ttft, itl=itl, e2e=e2e)
    return Scrape(time, requests, errors, _cumulative(buckets), count, total, tokens)


def _add(bucket_lists: list[Buckets]) -> Buckets:
    added: dict[float, float] = {}
    for bs in bucket_lists:
        for le, n in bs:
            added[le] = added.get(le, 0.0) + n
    return tuple(sorted(added.items()))


def _combine_tokens(parts: list[TokenScrape]) -> TokenScrape | None:
    if not parts:
        return None
    return TokenScrape(prompt_tokens=sum(t.prompt_tokens for t in parts),
                       generation_tokens=sum(t.generation_tokens for t in parts),
                       prefix_queries=sum(t.prefix_queries for t in parts),
                       prefix_hits=sum(t.prefix_hits for t in parts),
                       running=sum(t.running for t in parts), waiting=sum(t.waiting for t in parts),
                       kv_usage=tuple(v for t in parts for v in t.kv_usage), ttft=_add([t.ttft for t in parts]),
                       itl=_add([t.itl for t in parts]), e2e=_add([t.e2e for t in parts]),
                       replicas=sum(t.replicas for t in parts))


def combine(scrapes: list[Scrape]) -> Scrape:
    """Several replicas' scrapes as one (counts add up; the time is the latest)."""
    return Scrape(max((s.time for s in scrapes), default=0.0), sum(s.requests for s in scrapes),
                  sum(s.errors for s in scrapes), _add([s.buckets for s in scrapes]), sum(s.count for s in scrapes),
                  sum(s.total_seconds for s in scrapes),
                  _combine_tokens([s.tokens for s in scrapes if s.tokens is not None]))


def quantile(q: float, buckets: Buckets) -> float | None:
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


def _delta(cur: Buckets, prev: Buckets) -> Buckets | None:
    """The observations between two scrapes of a histogram; None when a counter went back (a restart)."""
    before = dict(prev)
    out = tuple((le, n - before.get(le, 0.0)) for le, n in cur)
    return None if any(n < 0 for _, n in out) else out


def _ms(q: float, buckets: Buckets) -> float | None:
    v = quantile(q, buckets)
    return None if v is None else v * 1000


def _seconds(cur: Scrape, prev: Scrape | None) -> float | None:
    """The length of the interval since `prev`, None when there is none."""
    return cur.time - prev.time if prev is not None and cur.time > prev.time else None


def went_back(cur: Scrape, prev: Scrape) -> bool:
    """Whether a counter of one replica went back between two of its scrapes (it restarted)."""
    if cur.requests < prev.requests or cur.errors < prev.errors or _delta(cur.buckets, prev.buckets) is None:
        return True
    return cur.tokens is not None and prev.tokens is not None and _token_delta(cur.tokens, prev.tokens) is None


def interval(cur: Mapping[str, Scrape], prev: Mapping[str, Scrape]) -> tuple[Scrape, Scrape] | None:
    """The replicas (by pod) scraped both times whose counters did not go back, added up at each time: what
    the rates and the percentiles of an interval come from. A replica that restarted, left, came only now or
    could not be read once is left out of the interval, so it neither stops the chart nor adds its whole
    lifetime to one point; None when no replica is left."""
    same = [k for k in cur if k in prev and not went_back(cur[k], prev[k])]
    if not same:
        return None
    return combine([cur[k] for k in same]), combine([prev[k] for k in same])


def latency_view(cur: Scrape, prev: Scrape | None, now: Scrape | None = None) -> LatencyView:
    """Rate and percentiles over the time since `prev` when it is usable, else since start; with the
    token metrics of a language model (`token_view`) when the servers export them. `cur` and `prev` are
    the same replicas at two times (`interval`); `now`, every replica as scraped now, gives the totals and
    the percentiles since start (`cur` when not given)."""
    now = now or cur
    buckets, window, rate = now.buckets, "since start", None
    seconds = _seconds(cur, prev)
    if prev is not None and seconds is not None and cur.requests >= prev.requests:
        delta = _delta(cur.buckets, prev.buckets)
        if delta is not None:
            rate = (cur.requests - prev.requests) / seconds
            if delta and delta[-1][1] > 0:
                buckets, window = delta, f"last {seconds:.0f} s"
    return LatencyView(int(now.requests), rate, _ms(0.5, buckets), _ms(0.99, buckets), window, int(now.errors),
                       token_view(cur, prev, now))


def _token_delta(cur: TokenScrape, prev: TokenScrape) -> tuple[TokenScrape, bool] | None:
    """The tokens and observations between two scrapes (and whether any latency was observed); None when a
    counter went back (a replica restarted or left)."""
    prompt, generation = cur.prompt_tokens - prev.prompt_tokens, cur.generation_tokens - prev.generation_tokens
    queries, hits = cur.prefix_queries - prev.prefix_queries, cur.prefix_hits - prev.prefix_hits
    ttft, itl, e2e = _delta(cur.ttft, prev.ttft), _delta(cur.itl, prev.itl), _delta(cur.e2e, prev.e2e)
    if min(prompt, generation, queries, hits) < 0 or ttft is None or itl is None or e2e is None:
        return None
    observed = any(h and h[-1][1] > 0 for h in (ttft, itl, e2e))
    return TokenScrape(prompt_tokens=prompt, generation_tokens=generation, prefix_queries=queries, prefix_hits=hits,
                       running=cur.running, waiting=cur.waiting, kv_usage=cur.kv_usage, ttft=ttft, itl=itl, e2e=e2e,
                       replicas=cur.replicas), observed


def _share(part: float, whole: float) -> float | None:
    """part/whole as a share, None when there is nothing to share or it would be above 1 (a lie)."""
    return part / whole if whole > 0 and part <= whole else None


def token_view(cur: Scrape, prev: Scrape | None, everyone: Scrape | None = None) -> TokenView | None:
    """A language model's token rates, latency percentiles, prefix-cache hit rate and gauges; None when the
    servers export no token metrics. `cur`, `prev` and `everyone` as in `latency_view`."""
    now = (everyone or cur).tokens
    if now is None:
        return None
    seconds = _seconds(cur, prev)
    since, window, gen_rate, prompt_rate, query_rate = now, "since start", None, None, None
    hit_rate = _share(now.prefix_hits, now.prefix_queries)
    if seconds is not None and prev is not None and prev.tokens is not None and cur.tokens is not None:
        delta = _token_delta(cur.tokens, prev.tokens)
        if delta is not None:
            d, observed = delta
            gen_rate, prompt_rate = d.generation_tokens / seconds, d.prompt_tokens / seconds
            query_rate = d.prefix_queries / seconds
            if d.prefix_queries > 0:
                hit_rate = _share(d.prefix_hits, d.prefix_queries)
            if observed:
                since, window = d, f"last {seconds:.0f} s"
    kv = now.kv_usage
    kv_mean, kv_max = (sum(kv) / len(kv), max(kv)) if kv else (None, None)
    return TokenView(gen_rate, prompt_rate, _ms(0.5, since.ttft), _ms(0.99, since.ttft), _ms(0.5, since.itl),
                     _ms(0.5, since.e2e), hit_rate, query_rate, kv_mean, kv_max,
                     round(now.running), round(now.waiting), round(now.generation_tokens), window, now.replicas)
