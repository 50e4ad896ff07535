"""Prometheus metrics, correct across gunicorn workers (prometheus-client's multiprocess mode).

The counters are plain prometheus-client objects; only init_app touches Flask.
"""
import ipaddress
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

from webapp.core.fetch import parse_allow_nets

REQUESTS = Counter("winnow_requests_total", "HTTP requests", ["endpoint", "status"])
LATENCY = Histogram("winnow_request_seconds", "HTTP request latency", ["endpoint"],
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
PREDICTIONS = Counter("winnow_predictions_total", "Predictions by top class", ["label"])
ACTIVE_MODEL = Gauge("winnow_active_model", "1 for the model version a worker serves",
                     ["version"], multiprocess_mode="liveall")
SOURCE_UP = Gauge("winnow_model_source_up",
                  "A serving node's worker: 1 when its last check of the model source worked",
                  ["source"], multiprocess_mode="liveall")
SOURCE_CHECK_AGE = Gauge("winnow_model_source_check_age_seconds",
                         "A serving node's worker: seconds since it last checked its model source",
                         ["source"], multiprocess_mode="liveall")
SOURCE_FAILURES = Counter("winnow_model_source_failures_total",
                          "A serving node's failed checks of its model source, by kind "
                          "(unreachable, refused)", ["kind"])
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


def record_source_failure(kind, message=None):
    """Count one failed check of a node's model source by its kind."""
    SOURCE_FAILURES.labels(kind).inc()


def set_source_state(source, up, age):
    """Publish whether this worker's model source answers, and how long ago it was checked."""
    SOURCE_UP.labels(source).set(1 if up else 0)
    if age is not None:
        SOURCE_CHECK_AGE.labels(source).set(age)


def allowed(address, nets):
    """Tell whether a client address may read /metrics: any when `nets` is empty, else in one."""
    if not nets:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:  # no address (a unix socket): not a known network
        return False
    ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:10.0.0.5 is 10.0.0.5
    return any(ip in net for net in nets)


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
    from flask import Response, abort, g, request

    nets = parse_allow_nets(app.config["METRICS_ALLOW_NETS"])

    def start():
        g.metrics_started = time.perf_counter()

    def finish(response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(endpoint, str(response.status_code)).inc()
        if "metrics_started" in g:
            LATENCY.labels(endpoint).observe(time.perf_counter() - g.metrics_started)
        return response

    def serve():
        if not allowed(request.remote_addr, nets):
            abort(404)  # not 403: outside the chosen networks, /metrics is not advertised
        return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)

    app.before_request(start)
    app.after_request(finish)
    app.add_url_rule("/metrics", "metrics", serve)
