"""SQLite connections to the data directory's store (WAL mode)."""
import contextlib
import os
import sqlite3
import time
from importlib import resources
from pathlib import Path

DB_NAME = "winnow.sqlite3"
_created = set()  # stores whose tables this process has made sure of


def connect(data_dir):
    """Open the store in `data_dir`, creating its tables on first use."""
    path = (Path(data_dir) / DB_NAME).resolve()
    if not path.exists():
        # SQLite would create it with the umask's mode (often world-readable); created 0600 it
        # stays private, and SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    _use_wal(conn)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    if path not in _created:  # once per process, not on every request's connection
        conn.executescript(resources.files(__package__).joinpath("schema.sql").read_text())
        _migrate(conn)
        _created.add(path)
    return conn


def _use_wal(conn, patience=30.0):
    """Put the store in WAL mode; the mode is kept in the file, so only its first opening sets it.

    Switching takes an exclusive lock and SQLite answers "database is locked" at once, without
    waiting out busy_timeout, when another process opens the new store at the same moment (two
    workers starting together): retry until the patience runs out.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# Columns added after the first release: (table, column, type). Stores made before them get
# them on first connection; schema.sql has them for new stores.
ADDED_COLUMNS = [("events", "change_id", "INTEGER"), ("events", "undoes", "INTEGER"),
                 ("jobs", "cancel_requested", "REAL"),
                 # Versions registered before it were finished: they read as ready.
                 ("models", "status", "TEXT NOT NULL DEFAULT 'ready'")]


def _migrate(conn):
    for table, column, kind in ADDED_COLUMNS:
        if column not in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    conn.execute("CREATE INDEX IF NOT EXISTS events_change ON events(change_id)")
    conn.execute("CREATE INDEX IF NOT EXISTS events_undoes ON events(undoes) "
                 "WHERE undoes IS NOT NULL")


@contextlib.contextmanager
def session(data_dir):
    """Yield a connection to the store and close it afterwards."""
    conn = connect(data_dir)
    try:
        yield conn
    finally:
        conn.close()


class transaction:
    """Run a block as one write transaction (BEGIN IMMEDIATE: no lost updates)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False


def get_setting(conn, key, default=None):
    """Return a stored setting, or `default`."""
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return row["value"] if row else default


def set_setting(conn, key, value):
    """Store a setting."""
    conn.execute(
        "INSERT INTO settings(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
