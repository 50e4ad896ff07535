"""Configuration: one place, read from the environment with defaults.

The defaults of limits that the domain also needs without an app (a job process, the CLI, tests)
are the domain's own constants, so each number is written once.
"""
import os

from webapp.core import fetch, images
from webapp.ingest import zips


def _int(name, default):
    return int(os.environ.get(name, default))


def _float(name, default):
    return float(os.environ.get(name, default))


def from_environment():
    """Return the settings that the environment gives, with Winnow's defaults."""
    return {
        # "admin": the monolith (store, pages, jobs, training, registry). "node": a serving node
        # that answers the public classify pages only, following the admin's registry.
        "ROLE": os.environ.get("WINNOW_ROLE", "admin"),
        # A node's model source: the admin node's URL (read with NODE_TOKEN) or a shared,
        # read-only models/ directory; where it caches what it pulled; seconds between checks.
        "MODEL_SOURCE": os.environ.get("WINNOW_MODEL_SOURCE") or None,
        "NODE_TOKEN": os.environ.get("WINNOW_NODE_TOKEN") or None,
        "MODEL_CACHE": os.environ.get("WINNOW_MODEL_CACHE") or None,
        "SOURCE_POLL": _float("WINNOW_SOURCE_POLL", 1.0),
        # None means Flask's instance folder (resolved in create_app).
        "DATA_DIR": os.environ.get("WINNOW_DATA_DIR") or None,
        "SECRET_KEY": os.environ.get("WINNOW_SECRET_KEY") or None,
        "ADMIN_PASSWORD": os.environ.get("WINNOW_ADMIN_PASSWORD") or None,
        "VALID_PCT": _float("WINNOW_VALID_PCT", 0.2),
        "SPLIT_SEED": _int("WINNOW_SPLIT_SEED", 42),
        "MAX_PIXELS": _int("WINNOW_MAX_PIXELS", images.DEFAULT_MAX_PIXELS),
        "MAX_CONTENT_LENGTH": _int("WINNOW_MAX_UPLOAD_BYTES", 20 * 1024 * 1024),
        # An imported export.pkl (resnet50's is about 100 MB) gets its own, larger cap.
        "MAX_MODEL_UPLOAD_BYTES": _int("WINNOW_MAX_MODEL_UPLOAD_BYTES", 500 * 1024 * 1024),
        # A zip of class folders gets its own upload cap, and caps on what it unpacks to.
        "MAX_ZIP_UPLOAD_BYTES": _int("WINNOW_MAX_ZIP_UPLOAD_BYTES", 1024 ** 3),
        "ZIP_MAX_ENTRIES": _int("WINNOW_ZIP_MAX_ENTRIES", zips.MAX_ZIP_ENTRIES),
        "ZIP_MAX_BYTES": _int("WINNOW_ZIP_MAX_BYTES", zips.MAX_ZIP_BYTES),
        "LOGIN_RATE_LIMIT": os.environ.get("WINNOW_LOGIN_RATE_LIMIT", "10 per minute"),
        # Per client address: classifications (/api/classify, /classify-url, the page's form)
        # and the SGD lesson's runs (/learn/sgd, its .json and .gif), counted across workers.
        "CLASSIFY_RATE_LIMIT": os.environ.get("WINNOW_CLASSIFY_RATE_LIMIT", "120 per minute"),
        "SGD_RATE_LIMIT": os.environ.get("WINNOW_SGD_RATE_LIMIT", "30 per minute"),
        # Where rate limits are counted: a Redis server (needs the redis package), else the store.
        "REDIS_URL": os.environ.get("WINNOW_REDIS_URL") or None,
        # An admin login lasts this long from the moment of logging in, however busy it is.
        "SESSION_HOURS": _float("WINNOW_SESSION_HOURS", 12),
        "SESSION_REFRESH_EACH_REQUEST": False,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # "1": always Secure (TLS ends at a proxy that sends no X-Forwarded-Proto); otherwise
        # the session cookie is Secure whenever the request came over HTTPS (web/auth.py).
        "SESSION_COOKIE_SECURE": os.environ.get("WINNOW_SECURE_COOKIES", "auto") == "1",
        # Reverse proxies in front of the app whose X-Forwarded-* headers are believed.
        "TRUSTED_PROXIES": _int("WINNOW_TRUSTED_PROXIES", 0),
        # Private networks that server-side fetching may reach (intranets, tests): "a/b,c/d".
        "FETCH_ALLOW_NETS": os.environ.get("WINNOW_FETCH_ALLOW_NETS", ""),
        "FETCH_MAX_BYTES": _int("WINNOW_FETCH_MAX_BYTES", fetch.Limits.max_bytes),
        "FETCH_DEADLINE": _float("WINNOW_FETCH_DEADLINE", fetch.Limits.deadline),
        # Fetches from web requests in flight at once in one process; past it, 503 at once.
        "FETCH_CONCURRENCY": _int("WINNOW_FETCH_CONCURRENCY", 4),
        # Networks that may read /metrics: "a/b,c/d"; empty means every client.
        "METRICS_ALLOW_NETS": os.environ.get("WINNOW_METRICS_ALLOW_NETS", ""),
        # Which model of a version's serving bundle answers: "auto" (INT8 when it passed its
        # checks at export and on this machine, else fp32), "fp32", or "int8" (whenever made).
        "PRECISION": os.environ.get("WINNOW_PRECISION", "auto"),
        # Load the active model when the app is created (the serving default).
        "LOAD_MODEL": os.environ.get("WINNOW_LOAD_MODEL", "1") != "0",
        # Never try to download ImageNet weights (an offline machine): train from scratch.
        "OFFLINE": os.environ.get("WINNOW_OFFLINE", "0") == "1",
    }
