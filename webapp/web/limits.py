"""Rate limits per client that hold across gunicorn workers: counted in the store, or in Redis.

Each worker is a process with its own memory, so counts kept in memory let N workers accept N
times the limit. The counts live where every worker sees them: a table in the data dir's
`winnow.sqlite3` (fixed windows, each count changed in a BEGIN IMMEDIATE transaction), or the
Redis server that `WINNOW_REDIS_URL` names.
"""
import contextlib
import importlib.util
import sqlite3
import time
from urllib.parse import quote, unquote, urlsplit

import flask_limiter
from flask import current_app
from flask_limiter.util import get_remote_address
from limits.storage import Storage

from webapp.core import db

SCHEME = "winnow-sqlite"
TABLE = """
CREATE TABLE IF NOT EXISTS rate_limits (
    key TEXT PRIMARY KEY,
    hits INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_limits_expiry ON rate_limits(expires_at);
"""
EXTENSION = "winnow_rate_limits"


class SqliteStorage(Storage):
    """Fixed-window counters in the data dir's store, shared by every process that opens it."""

    STORAGE_SCHEME = [SCHEME]  # limits' registry maps "winnow-sqlite://<data dir>" to this class

    def __init__(self, uri, wrap_exceptions=False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.data_dir = unquote(urlsplit(uri).path)
        with db.session(self.data_dir) as conn:
            conn.executescript(TABLE)

    @property
    def base_exceptions(self):
        """Return the errors that mean the storage failed."""
        return sqlite3.Error

    @contextlib.contextmanager
    def _write(self):
        with db.session(self.data_dir) as conn, db.transaction(conn):
            yield conn

    def incr(self, key, expiry, amount=1):
        """Add `amount` to the key's count, opening a window of `expiry` seconds if none is."""
        now = time.time()
        with self._write() as conn:
            # An ended window is deleted first, so the insert below starts a new one.
            conn.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (now,))
            conn.execute("INSERT INTO rate_limits(key, hits, expires_at) VALUES (?, ?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET hits = hits + excluded.hits",
                         (key, amount, now + expiry))
            row = conn.execute("SELECT hits FROM rate_limits WHERE key = ?", (key,)).fetchone()
        return row["hits"]

    def _open_window(self, key):
        with db.session(self.data_dir) as conn:
            return conn.execute("SELECT hits, expires_at FROM rate_limits "
                                "WHERE key = ? AND expires_at > ?", (key, time.time())).fetchone()

    def get(self, key):
        """Return the key's count in its open window (0 when none is open)."""
        row = self._open_window(key)
        return row["hits"] if row else 0

    def get_expiry(self, key):
        """Return when the key's open window ends (now when none is open)."""
        row = self._open_window(key)
        return row["expires_at"] if row else time.time()

    def check(self):
        """Tell whether the store answers."""
        try:
            with db.session(self.data_dir) as conn:
                conn.execute("SELECT 1 FROM rate_limits LIMIT 1")
        except sqlite3.Error:
            return False
        return True

    def reset(self):
        """Forget every count; return how many there were."""
        with self._write() as conn:
            return conn.execute("DELETE FROM rate_limits").rowcount

    def clear(self, key):
        """Forget the key's count."""
        with self._write() as conn:
            conn.execute("DELETE FROM rate_limits WHERE key = ?", (key,))


def storage_uri(config):
    """Return where the app counts: the Redis server if one is set, else the data dir's store
    (a serving node has none: each of its workers counts in its own memory)."""
    redis_url = config["REDIS_URL"]
    if not redis_url:
        if config.get("ROLE") == "node":
            return "memory://"
        return f"{SCHEME}://{quote(config['DATA_DIR'])}"
    if importlib.util.find_spec("redis") is None:
        raise RuntimeError("WINNOW_REDIS_URL is set but the redis package is not installed: "
                           "install it (pip install redis), or unset WINNOW_REDIS_URL to count "
                           "in the data dir's store")
    return redis_url


class Limiter(flask_limiter.Limiter):
    """The limits, declared once on the views; each app counts in the storage made for it."""

    def init_app(self, app):
        """Count this app's requests in its own storage (the store of its data dir, or Redis)."""
        app.config["RATELIMIT_STORAGE_URI"] = storage_uri(app.config)
        super().init_app(app)
        # flask-limiter keeps one storage per limiter, the last app's; a worker has one app,
        # but tests run several apps (two "workers", many data dirs) in one process.
        app.extensions[EXTENSION] = self._limiter

    @property
    def limiter(self):
        """Return the current app's rate-limiting strategy over its storage."""
        return current_app.extensions[EXTENSION]

    @property
    def storage(self):
        """Return the current app's storage."""
        return self.limiter.storage


def configured(name):
    """Return a limit that reads the setting `name` (e.g. "120 per minute") when it applies."""
    return lambda: current_app.config[name]


limiter = Limiter(get_remote_address, default_limits=[])
# Shared by the routes each decorates: a client's count is the same whichever door it uses.
classifications = limiter.shared_limit(configured("CLASSIFY_RATE_LIMIT"), scope="classify")
sgd_runs = limiter.shared_limit(configured("SGD_RATE_LIMIT"), scope="sgd")
