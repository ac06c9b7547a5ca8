"""Prometheus metrics (prometheus-client), correct with several worker processes.

`catdog serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before the workers start;
each process then writes its samples there and GET /metrics merges them
(prometheus_client.multiprocess). Without the variable (tests, one process) the default
registry is used. Names follow Prometheus conventions: units in the name, `_total` on counters.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

from catdog.web import MULTIPROC_ENV
from catdog.web.metrics_files import install

install()  # before the first metric: a full disk must not kill the server with SIGBUS (metrics_files)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)

REQUESTS = Counter(
    "catdog_requests_total", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "catdog_request_duration_seconds",
    "HTTP request latency (server side)",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter(
    "catdog_predictions_total",
    "Predictions by class, model version and cache use",
    ["predicted_class", "model_version", "cached"],
)
BATCH_SIZE = Histogram("catdog_batch_size", "Images per ONNX Runtime run", buckets=BATCH_BUCKETS)
INFERENCE_SECONDS = Histogram(
    "catdog_inference_duration_seconds", "Seconds per ONNX Runtime run", buckets=LATENCY_BUCKETS
)
QUEUE_DEPTH = Gauge("catdog_queue_depth", "Images admitted and not yet answered", multiprocess_mode="livesum")
REJECTIONS = Counter("catdog_rejections_total", "Requests refused before any work", ["reason"])
CACHE = Counter("catdog_prediction_cache_total", "Prediction cache lookups", ["result"])
MODEL_INFO = Gauge(
    "catdog_model_info",
    "The served models (1; 0 once replaced) by content id, alias (production, staging) and registry version",
    ["model_version", "backbone", "precision", "alias", "registry_version"],
    multiprocess_mode="max",
)
DRIFT = Gauge("catdog_drift_value", "Latest drift statistics by test", ["test"], multiprocess_mode="mostrecent")
DRIFT_DETECTED = Gauge(
    "catdog_drift_detected", "1 when the latest drift check fired, by kind", ["kind"], multiprocess_mode="mostrecent"
)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """Every process's metrics in the format the scraper's Accept header asks for, and its content type.

    prometheus_client negotiates it (choose_encoder): OpenMetrics, or the classic text format
    for scrapers that ask for nothing else.
    """
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def mark_process_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (uvicorn calls nothing for us; serve does on exit)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
