"""The SQLite store: a new store opened by two workers at once."""
import sqlite3
import threading
import time

from webapp.core import db


def test_a_new_store_opened_while_another_worker_writes_waits_for_wal_instead_of_failing(tmp_path):
    # The other worker has just created the store and holds a write lock on it; switching to WAL
    # needs an exclusive lock, and SQLite refuses that at once, ignoring busy_timeout.
    other = sqlite3.connect(tmp_path / db.DB_NAME, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE scratch(x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO scratch VALUES (1)")
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()

    started = time.monotonic()
    with db.session(tmp_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert time.monotonic() - started >= 0.25  # it waited for the lock rather than going round it
    other.close()


def test_eight_workers_opening_a_new_store_together_all_get_in(tmp_path):
    for round_ in range(10):
        data_dir = tmp_path / str(round_)
        data_dir.mkdir()
        db._created.discard((data_dir / db.DB_NAME).resolve())
        errors = []

        def open_store(data_dir=data_dir, errors=errors):
            try:
                with db.session(data_dir) as conn, db.transaction(conn):
                    conn.execute("SELECT count(*) FROM jobs")
            except sqlite3.Error as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
