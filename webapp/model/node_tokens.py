"""Node tokens: what lets a serving node read the model registry, and nothing else.

A token is shown once, when it is made; the store keeps only its sha256, so a copy of the store
does not open the registry. A revoked token stays listed (who had it, until when) but opens nothing.
"""
import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from webapp.core import db
from webapp.dataset.store import now

PREFIX = "wn_"
MAX_NAME = 64
MAX_TOKEN = 256  # far longer than any token made here: anything longer is not one of ours
LAST_USED_EVERY = timedelta(minutes=1)  # last_used is written at most this often per token
COLUMNS = "id, name, created, last_used, revoked"


class TokenRefused(ValueError):
    """A node token request that cannot be done; the message says why."""


def _hash(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name):
    """Return the name stripped, or raise TokenRefused: 1 to 64 printable characters."""
    name = (name or "").strip()
    if not name:
        raise TokenRefused("give the node a name, such as the machine it runs on")
    if len(name) > MAX_NAME:
        raise TokenRefused(f"a node's name is at most {MAX_NAME} characters")
    if not name.isprintable():
        raise TokenRefused("a node's name must be printable characters only")
    return name


def create(data_dir, name):
    """Make a token for the node `name`; return (token id, token). Only its hash is stored."""
    name = check_name(name)
    token = PREFIX + secrets.token_urlsafe(32)
    with db.session(data_dir) as conn:
        cursor = conn.execute("INSERT INTO node_tokens(name, hash, created) VALUES (?, ?, ?)",
                              (name, _hash(token), now()))
    return cursor.lastrowid, token


def listing(data_dir):
    """Return every token, newest first, as dicts (id, name, created, last_used, revoked)."""
    with db.session(data_dir) as conn:
        rows = conn.execute(f"SELECT {COLUMNS} FROM node_tokens "
                            "ORDER BY created DESC, id DESC").fetchall()
    return [dict(r) for r in rows]


def revoke(data_dir, token_id):
    """Revoke a token for good; return False if it was revoked already (its first time stays).

    An unknown id raises TokenRefused.
    """
    with db.session(data_dir) as conn, db.transaction(conn):
        row = conn.execute("SELECT revoked FROM node_tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            raise TokenRefused(f"there is no node token #{token_id}")
        if row["revoked"] is not None:
            return False
        conn.execute("UPDATE node_tokens SET revoked = ? WHERE id = ?", (now(), token_id))
    return True


def check(data_dir, token):
    """Return the live token's record (as listing gives it), or None if unknown or revoked.

    Its last_used is brought up to date at most once a minute, not on every request.
    """
    if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > MAX_TOKEN:
        return None
    with db.session(data_dir) as conn:
        row = conn.execute(f"SELECT {COLUMNS} FROM node_tokens WHERE hash = ?",
                           (_hash(token),)).fetchone()
        if row is None or row["revoked"] is not None:
            return None
        record = dict(row)
        stale = (datetime.now(UTC) - LAST_USED_EVERY).isoformat(timespec="seconds")
        if record["last_used"] is None or record["last_used"] <= stale:
            record["last_used"] = now()
            # The condition again: of two workers that both saw it stale, one writes.
            conn.execute("UPDATE node_tokens SET last_used = ? WHERE id = ? "
                         "AND (last_used IS NULL OR last_used <= ?)",
                         (record["last_used"], record["id"], stale))
    return record
