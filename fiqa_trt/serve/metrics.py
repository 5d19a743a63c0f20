"""The service's Prometheus metrics (prometheus-client), in a registry of their own (one per app).

fiqa_requests_total{route,status}, fiqa_request_seconds{route}, fiqa_images_total{outcome=scored|error},
fiqa_batch_size, fiqa_batch_seconds, fiqa_queue_wait_seconds, fiqa_queue_depth, fiqa_rejected_requests_total{reason},
fiqa_dropped_images_total{reason=disconnected|timeout}, fiqa_internal_errors_total.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROUTES = ("/healthz", "/readyz", "/v1/model", "/v1/quality", "/metrics")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, depth=lambda: 0):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("fiqa_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.request_seconds = Histogram("fiqa_request_seconds", "Request latency", ["route"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.images = Counter("fiqa_images", "Images answered, by outcome", ["outcome"], registry=r)
        self.batch_size = Histogram("fiqa_batch_size", "Images per scored batch", buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("fiqa_batch_seconds", "Time to score one batch", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.queue_wait = Histogram("fiqa_queue_wait_seconds", "Time an image waited in the queue",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("fiqa_queue_depth", "Images queued, not yet in a batch", registry=r)
        self.queue_depth.set_function(depth)
        self.rejected = Counter("fiqa_rejected_requests", "Requests refused, by reason", ["reason"], registry=r)
        self.dropped = Counter("fiqa_dropped_images", "Queued images withdrawn before scoring, by reason",
                               ["reason"], registry=r)
        self.internal_errors = Counter("fiqa_internal_errors", "Requests that failed inside the service", registry=r)

    def observe_batch(self, size: int, seconds: float, waits: list[float]) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        for w in waits:
            self.queue_wait.observe(w)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts each HTTP request by route and status and times it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        import time

        route = scope.get("path", "")
        route = route if route in ROUTES else "other"
        status = {"code": 500}
        started = time.perf_counter()

        async def recording(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
