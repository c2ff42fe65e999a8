"""The Prometheus metrics of one app: request counts and latency per endpoint, embed batch
sizes, scheduled ingestion passes by outcome."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    """Prometheus metrics of one app: request counts and latency per endpoint, embed batch sizes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("clip_search_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("clip_search_request_seconds", "HTTP request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.batch = Histogram("clip_search_embed_batch_size", "texts per shared forward pass", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.image_batch = Histogram("clip_search_embed_image_batch_size", "images per shared forward pass",
                                     registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.ingest_runs = Counter("clip_search_ingest_runs_total", "scheduled ingestion passes (--ingest-every) by outcome",
                                   ["outcome"], registry=self.registry)


__all__ = ["Metrics"]
