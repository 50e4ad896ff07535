"""Uploaded pictures into the dataset: many files at once, or a zip of class folders.

Uploads are staged under incoming/<token>/ and imported by the "upload" job: a browser's batch
of files in the request that sent it (small: at most the upload cap), a zip in a job process of
its own (thousands of entries). Each file becomes one item: stored, duplicate of an existing
image, or rejected with the reason. A zip is read by webapp.ingest.zips, never extracted to disk.
"""
import hashlib
import json
import re
import secrets
import shutil
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path

from webapp.dataset.store import Added, Dataset
from webapp.ingest.downloads import added_detail
from webapp.ingest.entries import Entry, UploadRefused
from webapp.ingest.zips import MAX_ZIP_BYTES, MAX_ZIP_ENTRIES, open_zip, zip_entries, zip_reader

STAGING, STASH, ZIP_NAME = "incoming", "stash", "upload.zip"
KEEP_SECONDS = 24 * 3600  # abandoned staging folders and stashed pictures go after a day
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _prune(folder, max_age=KEEP_SECONDS):
    """Remove what is older than max_age seconds in a folder (left over by dead jobs)."""
    cutoff = time.time() - max_age
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.stat().st_mtime < cutoff:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _new_staging(data_dir):
    base = Path(data_dir) / STAGING
    base.mkdir(parents=True, exist_ok=True)
    _prune(base)
    token = secrets.token_hex(8)
    (base / token).mkdir()
    return token, base / token


def stage_files(data_dir, files):
    """Save uploaded (name, bytes) files for an upload job; return the staging token."""
    token, folder = _new_staging(data_dir)
    for i, (_, data) in enumerate(files):
        (folder / f"{i}.upload").write_bytes(data)
    (folder / "names.json").write_text(json.dumps([name for name, _ in files]))
    return token


def stage_zip(data_dir, save, max_entries=MAX_ZIP_ENTRIES, max_bytes=MAX_ZIP_BYTES):
    """Save an uploaded zip with `save(path)` and check it; return the staging token.

    A file that is not a zip, or one over the caps, is refused here, before any job starts.
    """
    token, folder = _new_staging(data_dir)
    try:
        save(folder / ZIP_NAME)
        with open_zip(folder / ZIP_NAME, max_entries) as zf:
            zip_entries(zf, None, max_entries, max_bytes)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return token



def import_entries(dataset, entries, read, source, on_result=None, actor="admin"):
    """Add each entry through the intake; return the Added results in order."""
    results = []
    for entry in entries:
        if entry.refusal:
            added = Added("rejected", entry.name, reason=entry.refusal)
        else:
            try:
                data = read(entry)
            except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError,
                    EOFError) as e:  # damaged, encrypted or an unknown compression
                added = Added("rejected", entry.name, reason=f"the zip entry cannot be read ({e})")
            else:
                added = dataset.add_image(data, label=entry.label, source=source, name=entry.name,
                                          actor=actor, write_csv=False)
        results.append(added)
        if on_result:
            on_result(added, entry.label, len(results))
    return results


def _staged_entries(folder, label):
    names = json.loads((folder / "names.json").read_text())
    return [Entry(name or f"file {i + 1}", label, source=folder / f"{i}.upload")
            for i, name in enumerate(names)]


def job_params(cfg, token, label=None, actor="admin", max_entries=MAX_ZIP_ENTRIES,
               max_bytes=MAX_ZIP_BYTES, label_map=None, upload=None):
    """Return an upload job's parameters: the staged upload and the settings its process needs.

    `label_map` sends a zip's folders to other classes ({folder: class}); `upload` names the
    browser upload a batch belongs to ({"id", "total"}).
    """
    return {"token": token, "label": label, "actor": actor, "max_entries": max_entries,
            "max_bytes": max_bytes, "store": Dataset.settings(cfg), "label_map": label_map or {},
            "upload": upload}


def staged_folder(data_dir, token):
    """Return a staged upload's folder; raise UploadRefused when it is gone (or no token)."""
    folder = Path(data_dir) / STAGING / (token or "")
    if not re.fullmatch(r"[0-9a-f]{16}", token or "") or not folder.is_dir():
        raise UploadRefused("the upload is gone (uploads are kept for a day); send it again")
    return folder



def import_staged(dataset, token, label=None, actor="admin", max_entries=MAX_ZIP_ENTRIES,
                  max_bytes=MAX_ZIP_BYTES, on_progress=None, on_item=None, label_map=None):
    """Import a staged upload (its files, or every entry of its zip); return {status: count}.

    `on_item(name, status, detail, image_id)` records each file's outcome; `on_progress` may
    raise to stop. A zip's folders named in `label_map` go to the class it gives them. The
    staged files are removed at the end either way.
    """
    folder = staged_folder(dataset.data_dir, token)
    label_map = label_map or {}
    counts = Counter()
    progress = on_progress or (lambda *a, **kw: None)

    def report(added, label, done):
        counts[added.status] += 1
        if on_item:
            on_item(added.name, added.status, added_detail(added, label), added.image_id)
        progress(done)  # the counts are the items' own: one count on the page, not two

    def run(entries, read, source):
        where = " from the zip" if source == "zip" else ""
        progress(0, len(entries), phase="importing",
                 message=f"Importing {len(entries)} files{where}")
        import_entries(dataset, entries, read, source, report, actor)

    try:
        if (folder / ZIP_NAME).exists():
            with open_zip(folder / ZIP_NAME, max_entries) as zf:
                entries = zip_entries(zf, label, max_entries, max_bytes)
                for entry in entries:
                    entry.label = label_map.get(entry.label, entry.label)
                run(entries, zip_reader(zf, max_bytes), "zip")
        else:
            run(_staged_entries(folder, label), lambda e: e.source.read_bytes(), "upload")
    finally:
        dataset.write_cleaned_csv()
        shutil.rmtree(folder, ignore_errors=True)
    return counts


# ---- pictures an admin classified, kept so they can join the dataset --------------------

def stash(data_dir, data):
    """Keep a classified picture for a day so an admin can add it; return its sha256."""
    folder = Path(data_dir) / STASH
    folder.mkdir(parents=True, exist_ok=True)
    _prune(folder)
    sha = hashlib.sha256(data).hexdigest()
    path = folder / sha
    if not path.exists():
        tmp = folder / f".{sha}.{secrets.token_hex(4)}"
        tmp.write_bytes(data)
        tmp.replace(path)
    return sha


def stashed(data_dir, sha):
    """Return a stashed picture's bytes, or raise UploadRefused."""
    path = Path(data_dir) / STASH / (sha or "")
    if not SHA256.match(sha or "") or not path.is_file():
        raise UploadRefused("that picture is no longer kept (they are kept for a day); "
                            "classify it again")
    return path.read_bytes()


def forget_stashed(data_dir, sha):
    """Drop a stashed picture (it is in the dataset now)."""
    if SHA256.match(sha or ""):
        (Path(data_dir) / STASH / sha).unlink(missing_ok=True)
