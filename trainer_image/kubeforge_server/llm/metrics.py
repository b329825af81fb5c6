"""Token metrics of the language-model engine, with vLLM's names and meanings under a `kubeforge:`
prefix (`kubeforge:time_to_first_token_seconds` is `vllm:time_to_first_token_seconds`), labelled
with the served model's name: time to first token (arrival to first generated token), inter-token
latency (between consecutive tokens of a request), end-to-end latency (arrival to the last token of
a finished request), requests running and waiting, the share of KV-cache blocks in use (0-1),
prompt and generation tokens, prefix-cache queries and hits (in tokens). Ours besides:
`kubeforge:kv_cache_waste_perc`, the share of the slots of held blocks that hold no token, and
`kubeforge:num_preemptions_total`.

The latency buckets grow by a quarter each (1 ms to about 20 min), so quantiles read from them are
within a few percent of the exact ones."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "kubeforge:"
LATENCY_BUCKETS = tuple(round(0.001 * 1.25**i, 6) for i in range(64))


class TokenMetrics:
    def __init__(self, registry: CollectorRegistry, model_name: str) -> None:
        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(PREFIX + name, doc, ["model_name"], buckets=LATENCY_BUCKETS,
                             registry=registry).labels(model_name)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(PREFIX + name, doc, ["model_name"], registry=registry).labels(model_name)

        def counter(name: str, doc: str) -> Counter:
            return Counter(PREFIX + name, doc, ["model_name"], registry=registry).labels(model_name)

        self.ttft = histogram("time_to_first_token_seconds", "Time from a request's arrival to its first token")
        self.itl = histogram("inter_token_latency_seconds", "Time between consecutive tokens of a request")
        self.e2e = histogram("e2e_request_latency_seconds", "Time from a request's arrival to its last token")
        self.running = gauge("num_requests_running", "Requests in the running batch")
        self.waiting = gauge("num_requests_waiting", "Requests waiting for a batch place or KV-cache blocks")
        self.kv_usage = gauge("kv_cache_usage_perc", "Share of KV-cache blocks held by requests (0-1)")
        self.kv_waste = gauge("kv_cache_waste_perc", "Share of the slots of held KV-cache blocks that hold no token")
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens of admitted requests")
        self.generation_tokens = counter("generation_tokens", "Generated tokens")
        self.prefix_queries = counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache")
        self.prefix_hits = counter("prefix_cache_hits", "Prompt tokens found in the prefix cache")
        self.preemptions = counter("num_preemptions", "Requests preempted (blocks freed, to be recomputed)")
