"""`GET /metrics` of `warmstart serve`: Prometheus text format through `prometheus-client`.

The registry belongs to the server object (no module-level state), so two servers in one process, as the
tests start, count apart. Queue depth and running rows are read from the engine when scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Paths counted by name; anything else is "other", so that a scan of random URLs cannot grow the label set.
ENDPOINTS = {
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/update_weights_from_disk",
    "/get_model_info",
    "/health",
    "/metrics",
}
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("warmstart_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("warmstart_prompt_tokens", "Prompt tokens of answered requests", registry=r)
        self.generated_tokens = Counter(
            "warmstart_generated_tokens", "Tokens generated for answered requests", registry=r
        )
        self.slice_rows = Histogram(
            "warmstart_slice_batch_size", "Rows per generation slice", buckets=BATCH_BUCKETS, registry=r
        )
        self.adapter_loads = Counter("warmstart_adapter_loads", "LoRA adapter loads", ["result"], registry=r)
        self.adapter_unloads = Counter("warmstart_adapter_unloads", "LoRA adapter unloads", ["result"], registry=r)
        self.weight_updates = Counter("warmstart_weight_updates", "Full-weight reloads", ["result"], registry=r)
        self.connections_refused = Counter(
            "warmstart_connections_refused", "Connections answered 503 past the connection limit", registry=r
        )
        Gauge("warmstart_queue_depth", "Requests waiting to be admitted", registry=r).set_function(engine.queued)
        Gauge("warmstart_rows_running", "Sequences being generated", registry=r).set_function(lambda: len(engine.live))

    def request(self, path: str, status: int) -> None:
        if path.startswith("/v1/models/"):
            path = "/v1/models/{id}"
        self.requests.labels(path if path in ENDPOINTS or path == "/v1/models/{id}" else "other", str(status)).inc()

    def tokens(self, usage: dict) -> None:
        self.prompt_tokens.inc(usage["prompt_tokens"])
        self.generated_tokens.inc(usage["completion_tokens"])

    def text(self) -> bytes:
        return generate_latest(self.registry)
