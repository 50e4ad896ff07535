"""The dataset store: images, classes and the events that change them."""
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import db, images, manifest

CLASS_NAME = re.compile(r"^\w[\w .\-]{0,63}$")


class StoreError(ValueError):
    """A request the store refuses; the message says why."""


@dataclass
class Added:
    """What happened to one incoming file."""

    status: str  # stored, duplicate or rejected
    name: str  # what the user called it (file name or URL)
    image_id: int | None = None
    reason: str = ""


def now():
    """Return the current UTC time as ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_valid_for(sha256, valid_pct=0.2, seed=42):
    """Decide an image's split from its content hash: the same answer forever."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < valid_pct


def check_class_name(name):
    """Return a clean class name, or raise StoreError."""
    name = (name or "").strip()
    if not CLASS_NAME.match(name) or name in (".", ".."):
        raise StoreError(
            f"{name!r} is not a usable class name: use 1–64 letters, digits, spaces, "
            "dots, dashes or underscores, starting with a letter or digit"
        )
    return name


def _write_atomic(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Dataset:
    """One data directory's images, classes and events."""

    def __init__(self, data_dir, valid_pct=0.2, seed=42, max_pixels=images.DEFAULT_MAX_PIXELS):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.valid_pct, self.seed, self.max_pixels = valid_pct, seed, max_pixels
        self.conn = db.connect(self.data_dir)

    @classmethod
    def from_config(cls, cfg):
        """Open the dataset an app's configuration names."""
        return cls(cfg["DATA_DIR"], cfg["VALID_PCT"], cfg["SPLIT_SEED"], cfg["MAX_PIXELS"])

    def close(self):
        """Close the database connection."""
        self.conn.close()

    # ---- reading -------------------------------------------------------------

    def image(self, image_id):
        """Return one image row, or None."""
        return self.conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()

    def file_path(self, row):
        """Return where an image's file is now (images/ or, when deleted, trash/)."""
        top = "trash" if row["deleted"] else ""
        return self.data_dir / top / row["path"] if top else self.data_dir / row["path"]

    def class_names(self):
        """Return the class names, sorted."""
        return [r["name"] for r in self.conn.execute("SELECT name FROM classes ORDER BY name")]

    def class_counts(self):
        """Return {class: {"train": n, "valid": n}} for live images, empty classes included."""
        counts = {name: {"train": 0, "valid": 0} for name in self.class_names()}
        rows = self.conn.execute(
            "SELECT label, is_valid, COUNT(*) AS n FROM images "
            "WHERE deleted IS NULL AND label IS NOT NULL GROUP BY label, is_valid"
        )
        for r in rows:
            counts[r["label"]]["valid" if r["is_valid"] else "train"] = r["n"]
        return counts

    def unlabeled_count(self):
        """Return how many live images have no label."""
        return self.conn.execute(
            "SELECT COUNT(*) FROM images WHERE deleted IS NULL AND label IS NULL"
        ).fetchone()[0]

    def labeled(self):
        """Return the live labeled images, oldest first: the rows of cleaned.csv."""
        return self.conn.execute(
            "SELECT id, path, label, is_valid FROM images "
            "WHERE deleted IS NULL AND label IS NOT NULL ORDER BY id"
        ).fetchall()

    def events(self, limit=100):
        """Return the newest events first."""
        return self.conn.execute(
            "SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()

    # ---- writing -------------------------------------------------------------

    def _event(self, kind, actor, image_id=None, before=None, after=None):
        self.conn.execute(
            "INSERT INTO events(at, actor, kind, image_id, before, after) VALUES (?,?,?,?,?,?)",
            (now(), actor, kind, image_id,
             json.dumps(before) if before is not None else None,
             json.dumps(after) if after is not None else None),
        )

    def _ensure_class(self, name, actor):
        name = check_class_name(name)
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO classes(name, created) VALUES (?, ?)", (name, now())
        )
        if cur.rowcount:
            self._event("add_class", actor, after={"name": name})
        return name

    def add_image(self, data, *, label=None, source="upload", name=None, actor="admin",
                  write_csv=True):
        """Store one incoming file, or report it as a duplicate or a rejection.

        Bulk imports pass write_csv=False and call write_cleaned_csv() once at the end.
        """
        sha = hashlib.sha256(data).hexdigest()
        existing = self.conn.execute(
            "SELECT id, deleted FROM images WHERE sha256 = ?", (sha,)
        ).fetchone()
        if existing:
            return Added("duplicate", name, existing["id"],
                         "same bytes as a deleted image" if existing["deleted"] else "")
        if label is not None:
            label = check_class_name(label)
        try:
            got = images.intake(data, self.max_pixels)
        except images.ImageRejected as e:
            return Added("rejected", name, reason=str(e))
        rel = f"images/{sha[:2]}/{sha}.{got.ext}"
        _write_atomic(self.data_dir / rel, got.data)
        try:
            with db.transaction(self.conn):
                if label is not None:
                    self._ensure_class(label, actor)
                cur = self.conn.execute(
                    "INSERT INTO images(sha256, path, width, height, format, label, is_valid, "
                    "source, original_name, added) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (sha, rel, got.width, got.height, got.format, label,
                     int(is_valid_for(sha, self.valid_pct, self.seed)), source, name, now()),
                )
                self._event("add", actor, cur.lastrowid, after={"label": label, "path": rel})
        except db.sqlite3.IntegrityError:  # the same bytes arrived at the same moment
            row = self.conn.execute("SELECT id FROM images WHERE sha256 = ?", (sha,)).fetchone()
            return Added("duplicate", name, row["id"] if row else None)
        if label is not None and write_csv:
            self.write_cleaned_csv()
        return Added("stored", name, cur.lastrowid)

    def change(self, kind, *, image_id=None, label=None, name=None, new_name=None,
               images_to="unlabel", actor="admin"):
        """Apply one change of label, class, deletion or restore, with its event, atomically."""
        handlers = {
            "relabel": lambda: self._relabel(image_id, label, actor),
            "delete": lambda: self._delete(image_id, actor),
            "restore": lambda: self._restore(image_id, actor),
            "add_class": lambda: self._ensure_class(name, actor),
            "rename_class": lambda: self._rename_class(name, new_name, actor),
            "delete_class": lambda: self._delete_class(name, images_to, actor),
        }
        if kind not in handlers:
            raise StoreError(f"unknown change {kind!r}")
        moves = []
        self._moves = moves
        with db.transaction(self.conn):
            result = handlers[kind]()
        for src, dst in moves:  # files follow the committed rows
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        self.write_cleaned_csv()
        return result

    def _live_image(self, image_id, deleted=False):
        row = self.image(image_id)
        if row is None or bool(row["deleted"]) != deleted:
            state = "deleted " if deleted else ""
            raise StoreError(f"there is no {state}image with id {image_id}")
        return row

    def _relabel(self, image_id, label, actor):
        row = self._live_image(image_id)
        if label is not None:
            label = self._ensure_class(label, actor)
        if row["label"] == label:
            return row["id"]
        self.conn.execute("UPDATE images SET label = ? WHERE id = ?", (label, image_id))
        self._event("relabel", actor, image_id, {"label": row["label"]}, {"label": label})
        return row["id"]

    def _delete(self, image_id, actor):
        row = self._live_image(image_id)
        self.conn.execute("UPDATE images SET deleted = ? WHERE id = ?", (now(), image_id))
        self._event("delete", actor, image_id, {"label": row["label"]}, {"deleted": True})
        self._moves.append((self.data_dir / row["path"], self.data_dir / "trash" / row["path"]))
        return row["id"]

    def _restore(self, image_id, actor):
        row = self._live_image(image_id, deleted=True)
        if row["label"] is not None:
            self._ensure_class(row["label"], actor)
        self.conn.execute("UPDATE images SET deleted = NULL WHERE id = ?", (image_id,))
        self._event("restore", actor, image_id, {"deleted": True}, {"label": row["label"]})
        self._moves.append((self.data_dir / "trash" / row["path"], self.data_dir / row["path"]))
        return row["id"]

    def _rename_class(self, name, new_name, actor):
        new_name = check_class_name(new_name)
        if name not in self.class_names():
            raise StoreError(f"there is no class {name!r}")
        if new_name in self.class_names():
            raise StoreError(f"a class {new_name!r} exists already")
        self.conn.execute("UPDATE classes SET name = ? WHERE name = ?", (new_name, name))
        self.conn.execute("UPDATE images SET label = ? WHERE label = ?", (new_name, name))
        self._event("rename_class", actor, before={"name": name}, after={"name": new_name})
        return new_name

    def _delete_class(self, name, images_to, actor):
        if name not in self.class_names():
            raise StoreError(f"there is no class {name!r}")
        if images_to not in ("unlabel", "delete"):
            raise StoreError("a deleted class's images are either unlabelled or deleted")
        ids = [r["id"] for r in self.conn.execute(
            "SELECT id FROM images WHERE label = ? AND deleted IS NULL", (name,))]
        for image_id in ids:
            if images_to == "delete":
                self._delete(image_id, actor)  # keeps its label: restore re-creates the class
            else:
                self._relabel(image_id, None, actor)
        self.conn.execute("DELETE FROM classes WHERE name = ?", (name,))
        self._event("delete_class", actor, before={"name": name, "images": ids},
                    after={"images_to": images_to})
        return name

    def write_cleaned_csv(self):
        """Rewrite cleaned.csv from the store, atomically."""
        return manifest.write_cleaned_csv(self.data_dir, self.labeled())
