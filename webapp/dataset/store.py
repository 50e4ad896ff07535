"""The dataset store: images, classes and the events that change them."""
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from webapp.core import db, files, images
from webapp.core.words import plural
from webapp.dataset import manifest
from webapp.dataset.merges import ClassMerges
from webapp.dataset.refusals import ClassExists, StoreError

CLASS_NAME = re.compile(r"^\w[\w .\-]{0,63}$")


@dataclass
class Added:
    """What happened to one incoming file."""

    status: str  # stored, duplicate or rejected
    name: str  # what the user called it (file name or URL)
    image_id: int | None = None
    reason: str = ""


def now():
    """Return the current UTC time as ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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


def _label_text(label):
    return f"{label!r}" if label is not None else "unlabeled"


def describe(kind, image_id, before, after):
    """Say what an event did, in words."""
    img = f"image #{image_id}"
    texts = {
        "add": lambda: f"added {img} as {_label_text(after.get('label'))}",
        "relabel": lambda: (f"{img}: {_label_text(before.get('label'))} → "
                            f"{_label_text(after.get('label'))}"),
        "delete": lambda: f"deleted {img} ({_label_text(before.get('label'))})",
        "restore": lambda: f"restored {img} ({_label_text(after.get('label'))})",
        "add_class": lambda: f"created class {after.get('name')!r}",
        "rename_class": lambda: f"renamed class {before.get('name')!r} to {after.get('name')!r}",
        "delete_class": lambda: _class_deleted(before, after),
        "merge_classes": lambda: (f"merged class {', '.join(map(repr, before.get('classes', [])))} "
                                  f"into {after.get('name')!r} "
                                  f"({plural(after.get('images', 0), 'image')})"),
        "unmerge_classes": lambda: (f"split class {', '.join(map(repr, after.get('classes', [])))}"
                                    f" back out of {before.get('name')!r}"),
    }
    return texts[kind]() if kind in texts else kind


def _class_deleted(before, after):
    n = len(before.get("images", []))
    fate = "deleted" if after.get("images_to") == "delete" else "unlabeled"
    text = f"deleted class {before.get('name')!r}"
    return f"{text} (it had no images)" if not n else f"{text}; its {plural(n, 'image')} {fate}"


def event_text(row):
    """Say what one event row did, in words."""
    return describe(row["kind"], row["image_id"], json.loads(row["before"] or "{}"),
                    json.loads(row["after"] or "{}"))


@dataclass
class Undone:
    """A change taken back: its id, and what each event it reverted had done."""

    change_id: int | None
    events: list  # (kind, text) of every reverted event, oldest first

    def text(self, kinds=None, shown=3):
        """Say what was taken back: the events of `kinds` (all, if none is), the first few."""
        texts = ([t for k, t in self.events if k in kinds] if kinds else []) or [
            t for _, t in self.events]
        more = f"; and {len(texts) - shown} more" if len(texts) > shown else ""
        return "; ".join(texts[:shown]) + more


CSV_LOCK = ".cleaned.csv.lock"  # serialises cleaned.csv rewrites across processes
SETTINGS = ("VALID_PCT", "SPLIT_SEED", "MAX_PIXELS")  # what a Dataset needs from the config


class Dataset(ClassMerges):
    """One data directory's images, classes and events."""

    def __init__(self, data_dir, valid_pct=0.2, seed=42, max_pixels=images.DEFAULT_MAX_PIXELS):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.valid_pct, self.seed, self.max_pixels = valid_pct, seed, max_pixels
        self.conn = db.connect(self.data_dir)
        self._change = self._undoes = None  # the change being written, the event it reverts
        self._moves = []

    @classmethod
    def from_config(cls, cfg):
        """Open the dataset an app's configuration names."""
        return cls(cfg["DATA_DIR"], cfg["VALID_PCT"], cfg["SPLIT_SEED"], cfg["MAX_PIXELS"])

    @staticmethod
    def settings(cfg):
        """Return the settings from_config reads besides DATA_DIR (a job process gets them)."""
        return {k: cfg[k] for k in SETTINGS}

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

    def live_ids(self, image_ids):
        """Return which of these image ids are live (stored and not deleted)."""
        ids = list(image_ids)
        return {r["id"] for r in self.conn.execute(
            f"SELECT id FROM images WHERE deleted IS NULL AND id IN ({','.join('?' * len(ids))})",
            ids)}

    def last_event_id(self):
        """Return the newest event's id (0 before any)."""
        return self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]

    def change_events(self, change_id, kinds=None):
        """Return one change's events, oldest first, only those of `kinds` if given."""
        sql, args = "SELECT * FROM events WHERE change_id = ?", [change_id]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        return self.conn.execute(sql + " ORDER BY id", args).fetchall()

    def events(self, limit=100):
        """Return the newest events first."""
        return self.conn.execute(
            "SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()

    # ---- writing -------------------------------------------------------------

    def _event(self, kind, actor, image_id=None, before=None, after=None):
        # Every event of one change shares the change's id (its first event's id): one undo step.
        cur = self.conn.execute(
            "INSERT INTO events(at, actor, kind, image_id, before, after, change_id, undoes) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (now(), actor, kind, image_id,
             json.dumps(before) if before is not None else None,
             json.dumps(after) if after is not None else None,
             self._change, self._undoes),
        )
        if self._change is None:
            self._change = cur.lastrowid
            self.conn.execute("UPDATE events SET change_id = id WHERE id = ?", (cur.lastrowid,))

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
        (self.data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(self.data_dir / rel, got.data)
        self._change = self._undoes = None
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
        return self.apply([dict(kind=kind, image_id=image_id, label=label, name=name,
                                new_name=new_name, images_to=images_to)], actor)[0]

    def apply(self, changes, actor="admin"):
        """Apply several changes as one: one transaction, one undo step; return their results.

        Each change is a dict with "kind" (relabel, delete, restore, add_class, rename_class,
        delete_class) and that kind's arguments (image_id, label, name, new_name, images_to).
        """
        def run():
            return [self._handler(dict(c), actor)() for c in changes]
        return self._commit(run)

    def merge_classes(self, names, into, actor="admin"):
        """Relabel every image of the classes `names` as `into` and drop them; one undo step.

        `into` may be one of them, another class or a new name. Return how many live images moved.
        """
        into = check_class_name(into)
        return self._commit(lambda: self._merge_classes(names, into, actor))

    def _handler(self, c, actor):
        kind = c.pop("kind", None)
        handlers = {
            "relabel": lambda: self._relabel(c.get("image_id"), c.get("label"), actor),
            "delete": lambda: self._delete(c.get("image_id"), actor),
            "restore": lambda: self._restore(c.get("image_id"), actor),
            "add_class": lambda: self._ensure_class(c.get("name"), actor),
            "rename_class": lambda: self._rename_class(c.get("name"), c.get("new_name"), actor),
            "delete_class": lambda: self._delete_class(
                c.get("name"), c.get("images_to") or "unlabel", actor),
        }
        if kind not in handlers:
            raise StoreError(f"unknown change {kind!r}")
        return handlers[kind]

    def _commit(self, run):
        """Run `run` as one change in one write transaction; then move files and rewrite the CSV."""
        self._change = self._undoes = None
        self._moves = []
        try:
            with db.transaction(self.conn):
                result = run()
        finally:
            self._change = self._undoes = None
        moves, self._moves = self._moves, []
        for src, dst in moves:  # files follow the committed rows
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        self.write_cleaned_csv()
        return result

    # ---- undo ----------------------------------------------------------------

    # The rule: only a recorded change can be undone (a no-op records no event, so there is
    # nothing of it to undo and "undo last" reaches past it), and every undo returns Undone,
    # which names what it took back.

    def undo(self, event_id, actor="admin"):
        """Revert one event (as new events that point back at it); return what was undone."""
        def run():
            row = self._event_row(event_id)
            self._revert(row, actor)
            return Undone(row["change_id"], [(row["kind"], event_text(row))])
        return self._commit(run)

    def undo_change(self, change_id, actor="admin"):
        """Revert a change's events not reverted yet, newest first; return what was undone."""
        def run():
            rows = self.conn.execute(
                "SELECT * FROM events e WHERE change_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM events u WHERE u.undoes = e.id) ORDER BY id DESC",
                (change_id,)).fetchall()
            if not rows:
                raise StoreError(f"change #{change_id} does not exist or was undone already")
            for row in rows:
                self._revert(row, actor)
            return Undone(change_id, [(r["kind"], event_text(r)) for r in reversed(rows)])
        return self._commit(run)

    def last_change(self, actor=None, kinds=None):
        """Return the id of the newest change that can be undone (not an undo, not undone), or None.

        `actor` limits it to one person's changes; `kinds` to changes with an event of those kinds.
        """
        sql = ("SELECT e.change_id FROM events e WHERE e.change_id IS NOT NULL "
               "GROUP BY e.change_id HAVING MAX(e.undoes IS NOT NULL) = 0 "
               "AND NOT EXISTS (SELECT 1 FROM events u JOIN events o ON u.undoes = o.id "
               "                WHERE o.change_id = e.change_id)")
        args = []
        if actor is not None:
            sql += " AND MIN(e.actor = ?) = 1"
            args.append(actor)
        if kinds:
            sql += f" AND MAX(e.kind IN ({','.join('?' * len(kinds))})) = 1"
            args.extend(kinds)
        row = self.conn.execute(sql + " ORDER BY e.change_id DESC LIMIT 1", args).fetchone()
        return row["change_id"] if row else None

    def undo_last(self, actor=None, kinds=None):
        """Undo the newest undoable change (see last_change); return what was undone, or None."""
        change_id = self.last_change(actor, kinds)
        if change_id is None:
            return None
        return self.undo_change(change_id, actor or "admin")

    def history(self, limit=50, offset=0, image_id=None, kinds=None, by_hand=False):
        """Return events newest first, each with `text`, `undone_by` and decoded before/after.

        `image_id` keeps one image's events, `kinds` the events of those kinds; `by_hand` leaves
        out undos and the changes that added images (the classes an import created with them).
        """
        where, args = [], []
        if image_id is not None:
            where.append("e.image_id = ?")
            args.append(image_id)
        if kinds:
            where.append(f"e.kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)
        if by_hand:
            where.append("e.undoes IS NULL AND NOT EXISTS (SELECT 1 FROM events a "
                         "WHERE a.change_id = e.change_id AND a.kind = 'add')")
        rows = self.conn.execute(
            "SELECT e.*, (SELECT MIN(u.id) FROM events u WHERE u.undoes = e.id) AS undone_by "
            f"FROM events e {'WHERE ' + ' AND '.join(where) if where else ''} "
            "ORDER BY e.id DESC LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        out = []
        for r in rows:
            item = dict(r)
            item["before"] = json.loads(r["before"]) if r["before"] else {}
            item["after"] = json.loads(r["after"]) if r["after"] else {}
            item["text"] = describe(r["kind"], r["image_id"], item["before"], item["after"])
            out.append(item)
        return out

    def _event_row(self, event_id):
        row = self.conn.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            raise StoreError(f"there is no event #{event_id}")
        return row

    def _revert(self, ev, actor):
        """Write the inverse of event `ev` (inside the current transaction)."""
        if self.conn.execute("SELECT 1 FROM events WHERE undoes = ?", (ev["id"],)).fetchone():
            raise StoreError(f"event #{ev['id']} was undone already")
        before = json.loads(ev["before"]) if ev["before"] else {}
        after = json.loads(ev["after"]) if ev["after"] else {}
        kind, image_id = ev["kind"], ev["image_id"]
        self._undoes = ev["id"]
        try:
            if kind in ("add", "restore"):
                self._delete(self._undo_target(image_id, ev)["id"], actor)
            elif kind == "delete":
                self._restore(self._undo_target(image_id, ev, deleted=True)["id"], actor)
            elif kind == "relabel":
                row = self._undo_target(image_id, ev)
                if row["label"] != after.get("label"):
                    raise StoreError(
                        f"image #{image_id} was relabelled again since (now "
                        f"{_label_text(row['label'])}); undo that change first")
                self._relabel(image_id, before.get("label"), actor)
            elif kind == "add_class":
                self._remove_empty_class(after["name"], actor)
            elif kind == "rename_class":
                self._rename_class(after["name"], before["name"], actor)
            elif kind == "merge_classes":
                self._unmerge_classes(before, after, actor)
            elif kind == "delete_class":
                if before["name"] in self.class_names():
                    raise StoreError(f"a class {before['name']!r} exists again already")
                self._ensure_class(before["name"], actor)
            else:
                raise StoreError(f"events of kind {kind!r} cannot be undone")
        finally:
            self._undoes = None

    def _undo_target(self, image_id, ev, deleted=False):
        row = self.image(image_id)
        if row is None or bool(row["deleted"]) != deleted:
            now_ = "deleted" if row is not None and row["deleted"] else "not deleted"
            raise StoreError(f"image #{image_id} is {now_} now, so event #{ev['id']} "
                             f"({ev['kind']}) cannot be undone; undo the later change first")
        return row

    def _remove_empty_class(self, name, actor):
        if name not in self.class_names():
            raise StoreError(f"there is no class {name!r}")
        n = self.conn.execute("SELECT COUNT(*) FROM images WHERE label = ? AND deleted IS NULL",
                              (name,)).fetchone()[0]
        if n:
            raise StoreError(f"class {name!r} has {plural(n, 'image')} now; "
                             "delete the class instead")
        self._delete_class(name, "unlabel", actor)

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
            raise ClassExists(new_name)
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
        """Rewrite cleaned.csv from the store, atomically, one writer at a time.

        Each writer reads the rows after taking the lock, so whoever writes last has read every
        change committed before it: two writers cannot leave an older snapshot in place.
        """
        with files.locked(self.data_dir / CSV_LOCK):
            return manifest.write_cleaned_csv(self.data_dir, self.labeled())
