"""Prometheus metrics, correct across gunicorn workers (prometheus-client's multiprocess mode).

The counters are plain prometheus-client objects; only init_app touches Flask.
"""
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("winnow_requests_total", "HTTP requests", ["endpoint", "status"])
LATENCY = Histogram("winnow_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
PREDICTIONS = Counter("winnow_predictions_total", "Predictions by top class", ["label"])
ACTIVE_MODEL = Gauge("winnow_active_model", "1 for the model version a worker serves",
                     ["version"], multiprocess_mode="liveall")
FETCH_FAILURES = Counter("winnow_fetch_failures_total", "URL fetches that failed", ["reason"])


def record_prediction(label):
    """Count one prediction by its top class."""
    PREDICTIONS.labels(label).inc()


def record_fetch_failure(reason):
    """Count one failed URL fetch by its kind."""
    FETCH_FAILURES.labels(reason).inc()


def set_active_model(old, new):
    """Mark which version this process serves."""
    if old and old != new:
        ACTIVE_MODEL.labels(old).set(0)
    if new:
        ACTIVE_MODEL.labels(new).set(1)


def exposition():
    """Return the metrics of every worker (or of this process when not under gunicorn)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry)


def init_app(app):
    """Time and count every request, and serve /metrics."""
    from flask import Response, g, request

    def start():
        g.metrics_started = time.perf_counter()

    def finish(response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(endpoint, str(response.status_code)).inc()
        if "metrics_started" in g:
            LATENCY.labels(endpoint).observe(time.perf_counter() - g.metrics_started)
        return response

    app.before_request(start)
    app.after_request(finish)
    app.add_url_rule("/metrics", "metrics",
                     lambda: Response(exposition(), mimetype=CONTENT_TYPE_LATEST))
