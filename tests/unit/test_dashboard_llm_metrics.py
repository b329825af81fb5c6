"""The serving page's language-model view models: token metrics parsed from the server's own metric
definitions (so a renamed series fails here), rates from counter deltas and percentiles from bucket deltas
across replicas, prefix-cache hit rates, a restarted replica, and hostile expositions (NaN, negative,
infinite, absurd values, broken buckets) that end as our own error or sane numbers, never as a crash or a
chart that lies."""

from __future__ import annotations

import math
import random

import pytest
from kubeforge_dashboard import metrics
from kubeforge_dashboard.history import ServingHistory
from kubeforge_dashboard.views import serving
from kubeforge_server.llm.metrics import TokenMetrics
from prometheus_client import CollectorRegistry, generate_latest


def llm_text(prompt: int, generated: int, ttft: list[float], itl: list[float], queries: int = 0, hits: int = 0,
             running: int = 0, waiting: int = 0, kv: float = 0.0) -> str:
    """A language-model server's /metrics, written by the server's own TokenMetrics."""
    reg = CollectorRegistry()
    m = TokenMetrics(reg, "tiny")
    m.prompt_tokens.inc(prompt)
    m.generation_tokens.inc(generated)
    m.prefix_queries.inc(queries)
    m.prefix_hits.inc(hits)
    m.running.set(running)
    m.waiting.set(waiting)
    m.kv_usage.set(kv)
    for v in ttft:
        m.ttft.observe(v)
        m.e2e.observe(v * 3)
    for v in itl:
        m.itl.observe(v)
    return generate_latest(reg).decode()


def test_a_server_without_token_metrics_has_no_language_model_panel() -> None:
    reg = CollectorRegistry()
    from prometheus_client import Counter
    Counter("kubeforge_inference_requests", "", ["endpoint", "code"], registry=reg).labels("infer", "200").inc(3)
    scrape = metrics.parse(generate_latest(reg).decode(), 1.0)
    assert scrape.tokens is None and metrics.latency_view(scrape, None).tokens is None
    only_tokens = metrics.parse(llm_text(10, 5, [0.02], [0.01]), 1.0)  # no OIP series at all: still ours
    assert only_tokens.tokens is not None and only_tokens.requests == 0
    untyped = "\n".join(line for line in llm_text(10, 5, [0.02], [0.01]).splitlines() if not line.startswith("#"))
    assert metrics.parse(untyped + "\n", 1.0).tokens == only_tokens.tokens  # no TYPE lines: read the same


def test_rates_and_percentiles_over_the_interval_across_replicas() -> None:
    a0 = metrics.parse(llm_text(100, 50, [0.02] * 10, [0.005] * 40, queries=100, hits=0, kv=0.1), 100.0)
    b0 = metrics.parse(llm_text(100, 50, [0.02] * 10, [0.005] * 40, queries=100, hits=0, kv=0.3), 100.0)
    first = metrics.combine([a0, b0])
    view = metrics.token_view(first, None)
    assert view is not None and view.window == "since start" and view.generation_per_second is None
    assert view.generation_tokens == 100 and view.replicas == 2
    assert view.ttft_p50_ms == pytest.approx(20.0, rel=0.25) and view.itl_p50_ms == pytest.approx(5.0, rel=0.25)
    assert view.kv_usage_mean == pytest.approx(0.2) and view.kv_usage_max == pytest.approx(0.3)
    assert view.prefix_hit_rate == 0.0  # 100 tokens looked up, none found
    # 10 s later: each replica generated 200 more tokens and admitted 400 prompt tokens, all its TTFTs slow,
    # half of the prompt tokens it looked up were cached; one replica is busy now
    a1 = metrics.parse(llm_text(500, 250, [0.02] * 10 + [0.4] * 10, [0.005] * 240, queries=500, hits=200,
                                running=3, waiting=2, kv=0.9), 110.0)
    b1 = metrics.parse(llm_text(500, 250, [0.02] * 10 + [0.4] * 10, [0.005] * 240, queries=500, hits=200,
                                kv=0.3), 110.0)
    view = metrics.token_view(metrics.combine([a1, b1]), first)
    assert view is not None and view.window == "last 10 s"
    assert view.generation_per_second == pytest.approx(40.0) and view.prompt_per_second == pytest.approx(80.0)
    assert view.ttft_p50_ms == pytest.approx(400.0, rel=0.25)  # the interval's, not the lifetime's
    assert view.prefix_hit_rate == pytest.approx(0.5) and (view.running, view.waiting) == (3, 2)
    assert view.kv_usage_mean == pytest.approx(0.6) and view.kv_usage_max == pytest.approx(0.9)
    tiles = {t.label: t.value for t in serving.token_tiles(view)}
    assert tiles == {"Generated tokens/s": "40.0/s", "Prompt tokens/s": "80.0/s",
                     "TTFT p50": tiles["TTFT p50"], "TTFT p99": tiles["TTFT p99"], "ITL p50": tiles["ITL p50"],
                     "KV cache": "60.0 % (max 90.0 %)", "Running / waiting": "3 / 2", "Prefix-cache hits": "50.0 %"}


def test_history_points_and_chart_rows() -> None:
    h = ServingHistory(min_interval=1.0)
    h.add("ml/llm", metrics.parse(llm_text(0, 0, [], []), 100.0))
    h.add("ml/llm", metrics.parse(llm_text(100, 40, [0.05] * 4, [0.01] * 36, queries=100, hits=25,
                                           kv=0.5, waiting=1), 110.0))
    h.add("ml/llm", metrics.parse(llm_text(100, 40, [0.05] * 4, [0.01] * 36, queries=100, hits=25), 120.0))  # idle
    first, idle = h.series("ml/llm")
    assert first.tokens is not None and idle.tokens is not None
    assert first.tokens.generation_per_second == pytest.approx(4.0) and first.tokens.prefix_hit_rate == 0.25
    assert idle.tokens.generation_per_second == 0 and idle.tokens.ttft_p50_ms is None  # nothing measured
    assert idle.tokens.prefix_hit_rate is None  # no lookups in the interval: no point, not the lifetime's rate
    rows = serving.token_history_rows(h.series("ml/llm"))
    assert list(rows) == [title for title, _ in serving.TOKEN_CHARTS]
    assert [(r["series"], r["value"]) for r in rows["Tokens per second"]] == [
        ("generated", pytest.approx(4.0)), ("prompt", pytest.approx(10.0)), ("generated", 0.0), ("prompt", 0.0)]
    assert [r["series"] for r in rows["Token latency"]] == ["TTFT p50", "TTFT p99", "ITL p50"]
    assert [(r["series"], r["value"]) for r in rows["Cache"]] == [
        ("KV usage (mean)", 50.0), ("KV usage (max)", 50.0), ("prefix hits", 25.0), ("KV usage (mean)", 0.0),
        ("KV usage (max)", 0.0)]
    assert [(r["series"], r["value"]) for r in rows["Requests"]] == [("running", 0.0), ("waiting", 1.0),
                                                                     ("running", 0.0), ("waiting", 0.0)]


def test_a_restarted_replica_gives_no_rates_until_the_next_interval() -> None:
    before = metrics.parse(llm_text(500, 200, [0.02] * 5, [0.01] * 100), 100.0)
    after = metrics.parse(llm_text(10, 4, [0.02], [0.01] * 3, running=1), 110.0)  # counters went back
    view = metrics.token_view(after, before)
    assert view is not None and view.generation_per_second is None and view.window == "since start"
    assert view.running == 1  # gauges are as scraped
    assert serving.token_tiles(view)[0].value == "measuring..."
    h = ServingHistory(min_interval=0)
    h.add("k", before)
    view, points = h.add("k", after)
    assert view.tokens is not None and view.tokens.generation_per_second is None and points == []
    view, points = h.add("k", metrics.parse(llm_text(20, 24, [0.02] * 2, [0.01] * 22), 120.0))
    assert view.tokens is not None and view.tokens.generation_per_second == pytest.approx(2.0)
    assert [r["value"] for r in serving.token_history_rows(points)["Tokens per second"]] == pytest.approx([2.0, 1.0])


HOSTILE_VALUES = ["NaN", "-1", "+Inf", "-Inf", "1e300", "1e16", "2"]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("series", ["kubeforge:generation_tokens_total", "kubeforge:num_requests_waiting",
                                    "kubeforge:kv_cache_usage_perc", 'kubeforge:time_to_first_token_seconds_bucket',
                                    "kubeforge_inference_requests_total"])
def test_hostile_values_are_refused_in_our_words(series: str, value: str) -> None:
    text = llm_text(10, 5, [0.02], [0.01]) + 'kubeforge_inference_requests_total{endpoint="infer",code="200"} 1.0\n'
    lines = text.splitlines()
    hit = [i for i, line in enumerate(lines) if line.startswith(series)]
    assert hit
    i = hit[-1]
    lines[i] = lines[i].rsplit(" ", 1)[0] + " " + value
    try:
        scrape = metrics.parse("\n".join(lines) + "\n", 1.0)
    except metrics.MetricsError as e:
        assert value not in str(e) or value == "2"
        return
    # what was read is a count: finite, non-negative, at most MAX_VALUE; a share at most 1
    view = metrics.latency_view(metrics.combine([scrape, scrape]), None)
    assert view.tokens is not None
    assert value == "2" or series != "kubeforge:kv_cache_usage_perc"  # a share above 1 is refused
    assert all(t.value for t in serving.token_tiles(view.tokens))


def test_broken_buckets_and_impossible_shares_never_mislead() -> None:
    text = llm_text(10, 5, [0.02] * 10, [0.01], queries=10, hits=10)
    # a bucket count below a lower bound's: made monotonic (as Prometheus does), never a negative latency
    lines = [line.replace(" 10.0", " 3.0") if 'le="0.027' in line and "first_token" in line else line
             for line in text.splitlines()]
    view = metrics.token_view(metrics.parse("\n".join(lines) + "\n", 1.0), None)
    assert view is not None and view.ttft_p50_ms is not None and 0 < view.ttft_p50_ms < 100
    with pytest.raises(metrics.MetricsError, match="upper bound"):
        metrics.parse(text.replace('le="0.001"', 'le="NaN"'), 1.0)
    # more hits than lookups is no share: none shown rather than above 100 %
    odd = text.replace("kubeforge:prefix_cache_hits_total{model_name=\"tiny\"} 10.0",
                       "kubeforge:prefix_cache_hits_total{model_name=\"tiny\"} 50.0")
    view = metrics.token_view(metrics.parse(odd, 1.0), None)
    assert view is not None and view.prefix_hit_rate is None
    assert {t.label: t.value for t in serving.token_tiles(view)}["Prefix-cache hits"] == "no lookups yet"


def test_random_expositions_end_as_our_error_or_finite_charts() -> None:
    rng = random.Random(7)
    base = llm_text(100, 50, [0.02] * 10, [0.005] * 40, queries=100, hits=30, kv=0.4)
    lines = base.splitlines()
    samples = [i for i, line in enumerate(lines) if not line.startswith("#")]
    h = ServingHistory(min_interval=0)
    for step in range(60):
        mutated = list(lines)
        for i in rng.sample(samples, 3):
            mutated[i] = mutated[i].rsplit(" ", 1)[0] + " " + rng.choice(
                [*HOSTILE_VALUES, "0", "0.5", "1e14", str(rng.uniform(0, 1000))])
        try:
            scrape = metrics.parse("\n".join(mutated) + "\n", float(step))
        except metrics.MetricsError:
            continue
        view, points = h.add("k", scrape)
        assert view.tokens is not None and all(t.value for t in serving.token_tiles(view.tokens))
        for rows in serving.token_history_rows(points).values():
            assert all(math.isfinite(float(str(r["value"]))) and float(str(r["value"])) >= 0 for r in rows)
        assert 0 <= (view.tokens.prefix_hit_rate or 0) <= 1 and 0 <= (view.tokens.kv_usage_max or 0) <= 1


def test_an_interval_counts_only_the_replicas_seen_at_both_ends() -> None:
    """Rates per replica, then added up (Prometheus' sum of rate()): a replica that could not be read once, that
    restarted, or that just came neither stops the chart nor adds its whole lifetime to one point."""
    def pod(t: float, generated: int, requests_: int = 0) -> metrics.Scrape:
        return metrics.parse(llm_text(2 * generated, generated, [0.02] * requests_, [0.01] * generated), t)

    h = ServingHistory(min_interval=0)
    h.add("k", {"a": pod(0, 100), "b": pod(0, 10_000)})
    view, _ = h.add("k", {"a": pod(10, 200)})  # b unreadable this time
    assert view.tokens is not None and view.tokens.generation_per_second == pytest.approx(10.0)
    assert view.tokens.generation_tokens == 200 and view.tokens.replicas == 1
    view, _ = h.add("k", {"a": pod(20, 300), "b": pod(20, 10_100)})  # b is back: not its lifetime in one point
    assert view.tokens is not None and view.tokens.generation_per_second == pytest.approx(10.0)
    view, _ = h.add("k", {"a": pod(30, 400), "b": pod(30, 50), "c": pod(30, 7_000)})  # b restarted, c is new
    assert view.tokens is not None and view.tokens.generation_per_second == pytest.approx(10.0)
    assert view.tokens.generation_tokens == 7_450 and view.tokens.replicas == 3  # totals: every replica now
    view, points = h.add("k", {"a": pod(40, 500), "b": pod(40, 150), "c": pod(40, 7_100)})
    assert view.tokens is not None and view.tokens.generation_per_second == pytest.approx(30.0)
    assert [p.tokens.generation_per_second for p in points if p.tokens] == pytest.approx([10.0, 10.0, 10.0, 30.0])
    view, points = h.add("k", {"a": pod(50, 1)})  # every replica restarted or left: no interval, the past stays
    assert view.tokens is not None and view.tokens.generation_per_second is None and len(points) == 4
