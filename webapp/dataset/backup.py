"""Backup and restore of a data directory: a consistent copy taken while the app serves.

The database is copied first, through SQLite's online backup API (one read transaction, so one
moment's state); then the files it names. Images are content-addressed and written before
their row commits, so every image the copy names existed when it was taken; one deleted or
restored meanwhile has moved between images/ and trash/, and is looked for in both. backup.json
is written last, atomically: a backup without it is incomplete, and restore refuses it.
"""
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from webapp.core import db, files
from webapp.dataset.manifest import CLEANED_CSV
from webapp.dataset.store import Dataset, now

MANIFEST = "backup.json"
FORMAT = 1
SECRET_KEY = "secret_key"
# models/ as webapp/model/registry.py lays it out (a layer above this one, so not imported).
MODELS, ACTIVE, ACTIVATIONS = "models", "ACTIVE", "activations.jsonl"
SKIPPED = ("thumbs/ (remade on view)", "incoming/ and stash/ (transient)",
           "jobs/ (job logs; their rows are kept)")
# What create_app writes into a new data dir on start; a restore may replace these.
FRESH_FILES = {db.DB_NAME, f"{db.DB_NAME}-wal", f"{db.DB_NAME}-shm", f"{db.DB_NAME}-journal",
               SECRET_KEY}
DATA_TABLES = ("images", "classes", "events", "models", "jobs")


class BackupError(ValueError):
    """A backup or restore that is refused; the message says why."""


@dataclass
class Copied:
    """What a backup copied, and what it could not find."""

    counts: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)  # live images whose file is nowhere
    problems: list = field(default_factory=list)  # trashed files, model folders, ACTIVE


def _quiet(*args, **kwargs):
    pass


def _is_temp(name):
    return name.startswith(".") and name.endswith(".tmp")  # a write in flight (core.files)


def check_destination(dest):
    """Refuse a backup destination that exists and is not an empty folder."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} exists and is not empty; back up into a new or empty folder")


def backup(data_dir, dest, on_progress=None):
    """Copy the data dir to `dest` (new or empty) while it may be in use; return the manifest."""
    data_dir, dest, progress = Path(data_dir), Path(dest), on_progress or _quiet
    if not (data_dir / db.DB_NAME).is_file():
        raise BackupError(f"{data_dir} holds no {db.DB_NAME}: it is not a Winnow data directory")
    check_destination(dest)
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds the secret key
    progress(0, 1, phase="database", message="copying the database")
    _snapshot(data_dir / db.DB_NAME, dest / db.DB_NAME)
    progress(1, 1, phase="database", message="database copied")
    with db.session(dest) as conn:
        rows = conn.execute("SELECT id, path, deleted FROM images ORDER BY id").fetchall()
        versions = {r["version"]: r["sha256"] for r in conn.execute("SELECT * FROM models")}
        copied = Copied(counts=_counts(conn))
        schema = _schema(conn)
    _copy_images(data_dir, dest, rows, copied, progress)
    copied.counts["active_version"] = _copy_models(data_dir, dest, versions, copied, progress)
    copied.counts["secret_key"] = _copy_secret_key(data_dir, dest)
    dataset = Dataset(dest)
    try:
        dataset.write_cleaned_csv()  # from the copy's own rows, so it matches them exactly
    finally:
        dataset.close()
    _self_contained(dest / db.DB_NAME)
    manifest = {"format": FORMAT, "complete": True, "created": now(), "counts": copied.counts,
                "schema": schema, "missing": copied.missing, "problems": copied.problems,
                "skipped": list(SKIPPED)}
    files.write_atomic(dest / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def _snapshot(source, target):
    """Copy a live database through the online backup API, running jobs marked as cut off."""
    src = sqlite3.connect(source, timeout=30)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # private, as the store
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # all pages in one step: one read transaction, one moment's state
        dst.execute(
            "UPDATE jobs SET status = 'failed', message = 'The backup was taken while this job "
            "ran; it did not run on in the copy.' WHERE status IN ('queued', 'running')")
        dst.commit()
    finally:
        dst.close()
        src.close()


def _self_contained(path):
    """Leave a database as one file (rollback journal, not WAL) so it is read in place."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def _counts(conn):
    def count(sql):
        return conn.execute(sql).fetchone()[0]
    return {"images": count("SELECT COUNT(*) FROM images WHERE deleted IS NULL"),
            "labeled": count("SELECT COUNT(*) FROM images WHERE deleted IS NULL "
                             "AND label IS NOT NULL"),
            "trashed": count("SELECT COUNT(*) FROM images WHERE deleted IS NOT NULL"),
            "classes": count("SELECT COUNT(*) FROM classes"),
            "events": count("SELECT COUNT(*) FROM events"),
            "models": count("SELECT COUNT(*) FROM models")}


def _schema(conn):
    """Return {table: [columns]}: the schema of the Winnow that wrote the backup."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: [c["name"] for c in conn.execute(f"PRAGMA table_info({t})")] for t in tables}


def _copy_images(data_dir, dest, rows, copied, progress):
    """Copy each image file the copied rows name into the folder its row says."""
    made = set()
    for done, row in enumerate(rows, 1):
        here = f"trash/{row['path']}" if row["deleted"] else row["path"]
        there = row["path"] if row["deleted"] else f"trash/{row['path']}"
        target = dest / here
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        if not _copy_first(target, [data_dir / here, data_dir / there] * 3):
            what = "deleted image" if row["deleted"] else "image"
            (copied.problems if row["deleted"] else copied.missing).append(
                f"{what} #{row['id']}: {row['path']} is in neither images/ nor trash/")
        progress(done, len(rows), phase="images", message=f"image #{row['id']}")


def _copy_first(target, candidates):
    """Copy the first of `candidates` that exists to `target`; tell whether one did."""
    for candidate in candidates:  # a file moved by a delete or restore is found on a later try
        try:
            shutil.copy2(candidate, target)
            return True
        except FileNotFoundError:
            continue
    return False


def _copy_models(data_dir, dest, versions, copied, progress):
    """Copy each registered version's folder, the activation log and ACTIVE; return ACTIVE."""
    src, out = data_dir / MODELS, dest / MODELS
    out.mkdir(exist_ok=True)
    for done, (version, sha) in enumerate(sorted(versions.items()), 1):
        progress(done - 1, len(versions), phase="models", message=version)
        if not (src / version).is_dir():
            copied.problems.append(f"model {version}: its folder is missing")
            continue
        shutil.copytree(src / version, out / version,
                        ignore=lambda _d, names: [n for n in names if _is_temp(n)])
        export = out / version / "export.pkl"
        if not export.is_file() or files.file_sha256(export) != sha:
            copied.problems.append(f"model {version}: export.pkl is missing or not as recorded")
    log = _whole_lines(src / ACTIVATIONS)
    if log:
        files.write_atomic(out / ACTIVATIONS, log)
    active = _active_in(src, log, versions, copied)
    if active:
        files.write_atomic(out / ACTIVE, active + "\n")
    progress(len(versions), len(versions), phase="models", message="models copied")
    return active


def _whole_lines(path):
    """Return a text file up to its last newline (an append in flight is left out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    return text[:text.rfind("\n") + 1]


def _active_in(src, log, versions, copied):
    """Return the active version if the copy has it, else the newest activated one it has."""
    try:
        active = (src / ACTIVE).read_text().strip() or None
    except FileNotFoundError:
        active = None
    if active is None or active in versions:
        return active
    # Registered after the database was copied: serve what was served before it.
    earlier = [_logged_version(line) for line in log.splitlines()]
    fallback = next((v for v in reversed(earlier) if v in versions), None)
    copied.problems.append(f"model {active} is newer than the copied database; "
                           f"the backup serves {fallback or 'no model'}")
    return fallback


def _logged_version(line):
    try:
        return json.loads(line).get("version")
    except (ValueError, AttributeError):  # a damaged line names no version
        return None


def _copy_secret_key(data_dir, dest):
    """Copy the secret key (0600) so sessions and CSRF tokens stay valid; tell whether it was."""
    try:
        key = (data_dir / SECRET_KEY).read_text()
    except FileNotFoundError:
        return False  # WINNOW_SECRET_KEY set in the environment: nothing on disk to keep
    files.write_atomic(dest / SECRET_KEY, key, perms=0o600)
    return True


def read_manifest(src):
    """Return a backup's manifest; refuse a folder whose backup is missing or did not finish."""
    src = Path(src)
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{src} has no {MANIFEST}: it is not a backup, or its backup did not "
                          "finish") from None
    except ValueError as e:
        raise BackupError(f"{src}: {MANIFEST} is unreadable ({e}); the backup is "
                          "incomplete") from e
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        raise BackupError(f"{src}: {MANIFEST} does not mark the backup complete")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src}: backup format {manifest.get('format')!r} is not the one this "
                          f"Winnow reads ({FORMAT})")
    if not (src / db.DB_NAME).is_file():
        raise BackupError(f"{src}: the backup has no {db.DB_NAME}")
    return manifest


def check_fresh(data_dir):
    """Refuse a data dir that holds more than what create_app writes into a new one."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        return
    extra = sorted(p.name for p in data_dir.iterdir() if p.name not in FRESH_FILES)
    if extra:
        raise BackupError(f"{data_dir} is not empty (it holds {', '.join(extra[:5])}); "
                          "restore into a new data directory")
    if (data_dir / db.DB_NAME).exists():
        conn = sqlite3.connect(data_dir / db.DB_NAME, timeout=30)
        try:
            held = [t for t in DATA_TABLES if _has_rows(conn, t)]
        finally:
            conn.close()
        if held:
            raise BackupError(f"{data_dir}: its database already holds {', '.join(held)}; "
                              "restore into a new data directory")


def _has_rows(conn, table):
    try:
        return conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None
    except sqlite3.OperationalError:  # no such table: nothing in it
        return False


def restore(src, data_dir, on_progress=None):
    """Restore a complete backup into a new data dir (stop the app first); return its manifest."""
    src, data_dir, progress = Path(src), Path(data_dir), on_progress or _quiet
    manifest = read_manifest(src)
    check_fresh(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    names = _backup_files(src)
    try:
        for done, rel in enumerate(names, 1):
            (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, data_dir / rel)
            progress(done, len(names), phase="files", message=rel)
    except BaseException:
        _remove_copied(data_dir)  # leave the data dir as fresh as it was, so a retry may run
        raise
    progress(0, 1, phase="database", message="restoring the database")
    _replace_database(src / db.DB_NAME, data_dir / db.DB_NAME)
    if (src / SECRET_KEY).is_file():
        files.write_atomic(data_dir / SECRET_KEY, (src / SECRET_KEY).read_text(), perms=0o600)
    active = manifest["counts"].get("active_version")
    if active:  # last: the app serves a model only once its database knows it
        files.write_atomic(data_dir / MODELS / ACTIVE, active + "\n")
    progress(1, 1, phase="database", message="restored")
    return manifest


def _replace_database(source, target):
    """Replace the fresh data dir's database with the backup's, private (0600) like the store."""
    for stale in ("-wal", "-shm", "-journal"):  # the fresh file's journals, not the new one's
        Path(f"{target}{stale}").unlink(missing_ok=True)
    with open(source, "rb") as f, files.atomic_write(target, "wb", perms=0o600) as out:
        shutil.copyfileobj(f, out)


def _backup_files(src):
    """Return the backup's files to copy, relative: images, trash, models (not ACTIVE), CSV."""
    names = [CLEANED_CSV] if (src / CLEANED_CSV).is_file() else []
    for top in ("images", "trash", MODELS):
        for path in sorted((src / top).rglob("*")):
            rel = path.relative_to(src).as_posix()
            if path.is_file() and not _is_temp(path.name) and rel != f"{MODELS}/{ACTIVE}":
                names.append(rel)
    return names


def _remove_copied(data_dir):
    for top in ("images", "trash", MODELS):
        shutil.rmtree(data_dir / top, ignore_errors=True)
    (data_dir / CLEANED_CSV).unlink(missing_ok=True)
