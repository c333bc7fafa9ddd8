"""The server's Prometheus metrics, in a registry of its own (two apps in one process never mix)."""

from __future__ import annotations

from typing import Any

from retrievekit._optional import require
from retrievekit.serve.batcher import BatchRecord, ModelWorker

__all__ = ["ServeMetrics"]

_ROUTES = ("/v1/embeddings", "/v1/encode", "/v1/rerank", "/rerank", "/v1/search", "/v1/models", "/health", "/metrics")
_POWERS = tuple(float(2**i) for i in range(0, 15))


class ServeMetrics:
    """Request counts and latencies by route and status, queue depth per model, batch sizes in
    texts and tokens, tokens and model seconds per model (tokens/s is their ratio), and the
    throughput of the last batch."""

    def __init__(self) -> None:
        prometheus = require("prometheus_client", extra="serve", purpose="the /metrics route")
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry()
        r = self.registry
        self.requests = prometheus.Counter("retrievekit_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = prometheus.Histogram(
            "retrievekit_request_seconds", "HTTP request latency", ["route"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.queue = prometheus.Gauge("retrievekit_queue_texts", "Texts waiting for a batch", ["model"], registry=r)
        self.batch_texts = prometheus.Histogram(
            "retrievekit_batch_texts", "Texts per model batch", ["model"], registry=r, buckets=_POWERS
        )
        self.batch_tokens = prometheus.Histogram(
            "retrievekit_batch_tokens",
            "Tokens per model batch",
            ["model"],
            registry=r,
            buckets=(*_POWERS[4:], 32768.0),
        )
        self.tokens = prometheus.Counter("retrievekit_tokens", "Tokens run through a model", ["model"], registry=r)
        self.model_seconds = prometheus.Counter(
            "retrievekit_model_seconds", "Seconds spent running model batches", ["model"], registry=r
        )
        self.tokens_per_second = prometheus.Gauge(
            "retrievekit_tokens_per_second", "Throughput of the model's last batch", ["model"], registry=r
        )

    def route(self, path: str) -> str:
        """The route label of a path (one label for every unknown path, so labels stay few)."""
        return path if path in _ROUTES else "other"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        route = self.route(path)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def watch(self, worker: ModelWorker) -> None:
        self.queue.labels(worker.name).set_function(lambda: worker.queued)

    def observe_batch(self, batch: BatchRecord) -> None:
        self.batch_texts.labels(batch.model).observe(batch.texts)
        self.batch_tokens.labels(batch.model).observe(batch.tokens)
        self.tokens.labels(batch.model).inc(batch.tokens)
        self.model_seconds.labels(batch.model).inc(batch.seconds)
        if batch.seconds > 0:
            self.tokens_per_second.labels(batch.model).set(batch.tokens / batch.seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        data: Any = self._prometheus.generate_latest(self.registry)
        return bytes(data), str(self._prometheus.CONTENT_TYPE_LATEST)
