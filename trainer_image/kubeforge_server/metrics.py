"""Prometheus metrics of one server (prometheus_client, own registry): requests by endpoint and
status code (`endpoint="connection"` for the answers the connection layer gives: 400, 408, 431, 503),
queue depth, request body bytes held, batch sizes, and latency per stage (queue wait, inference,
total)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = tuple(float(2**i) for i in range(13))
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter("kubeforge_inference_requests", "HTTP requests by endpoint and status code",
                                 ["endpoint", "code"], registry=self.registry)
        self.queue_depth = Gauge("kubeforge_inference_queue_depth", "Requests waiting for the model",
                                 registry=self.registry)
        self.body_bytes = Gauge("kubeforge_inference_body_bytes", "Request body bytes held by requests being "
                                "read or parsed (bounded by maxBufferedBytes)", registry=self.registry)
        self.batch_size = Histogram("kubeforge_inference_batch_size", "Rows per model call",
                                    buckets=_BATCH_BUCKETS, registry=self.registry)
        stage = Histogram("kubeforge_inference_latency_seconds", "Latency per stage of inference requests",
                          ["stage"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.queue_seconds = stage.labels("queue")
        self.inference_seconds = stage.labels("inference")
        self.total_seconds = stage.labels("total")
        self._children: dict[tuple[str, int], Counter] = {}

    def count(self, endpoint: str, code: int) -> None:
        child = self._children.get((endpoint, code))
        if child is None:
            child = self._children[(endpoint, code)] = self._requests.labels(endpoint, str(code))
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
