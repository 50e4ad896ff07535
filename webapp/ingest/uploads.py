"""Uploaded pictures into the dataset: many files at once, or a zip of class folders.

Uploads are staged under incoming/<token>/ and imported by the "upload" job: a browser's batch
of files in the request that sent it (small: at most the upload cap), a zip in a job process of
its own (thousands of entries). Each file becomes one item: stored, duplicate of an existing
image, or rejected with the reason. Nothing is ever extracted to disk from a zip: entries are
read into memory under caps, and their paths only ever name a class.
"""
import hashlib
import json
import re
import secrets
import shutil
import stat
import struct
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from webapp.dataset.store import Added, Dataset, StoreError, check_class_name
from webapp.ingest.downloads import added_detail
from webapp.ingest.folders import SKIPPED_NAMES

MAX_ZIP_ENTRIES = 20_000
MAX_ZIP_BYTES = 2 * 1024 ** 3  # uncompressed, all entries together
STAGING, STASH, ZIP_NAME = "incoming", "stash", "upload.zip"
KEEP_SECONDS = 24 * 3600  # abandoned staging folders and stashed pictures go after a day
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A zip's end records and central directory entries (APPNOTE 4.3.12-16), read before zipfile is
# let near the file: its ZipFile builds an object for every entry the central directory holds.
END = struct.Struct("<4s4H2LH")
END64_LOCATOR = struct.Struct("<4sLQL")
END64 = struct.Struct("<4sQ2H2L4Q")
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")


class UploadRefused(ValueError):
    """An upload refused as a whole; the message says why."""


@dataclass
class Entry:
    """One file of an upload: its name, the class it goes to, why it is refused (if it is)."""

    name: str
    label: str | None
    refusal: str = ""
    source: object = None  # a staged file's path, or a zip's ZipInfo


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
        with _open_zip(folder / ZIP_NAME, max_entries) as zf:
            zip_entries(zf, None, max_entries, max_bytes)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return token


def _open_zip(path, max_entries):
    try:
        _count_entries(path, max_entries)
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise UploadRefused("that file is not a zip archive (or it is damaged)") from None


def _too_many_files(count, max_entries):
    return UploadRefused(f"the zip has {count} files; at most {max_entries} are taken at once")


def _count_entries(path, max_entries):
    """Refuse a zip over the entry cap from its end records and central directory alone.

    zipfile trusts neither the count the end record claims nor a cap: it parses every record the
    central directory's size holds. So the records are walked here, cheaply, up to twice the cap
    and one (room for a folder entry beside each file, and one around them all), and the files
    among them counted.
    """
    with open(path, "rb") as f:
        claimed, start, size = _central_directory(f)
        most = 2 * max_entries + 1
        if claimed > most:
            raise UploadRefused(f"the zip has {claimed} entries; at most {max_entries} files "
                                "are taken at once")
        f.seek(start)
        files = records = walked = 0
        while walked < size:
            header = f.read(CENTRAL.size)
            if len(header) < CENTRAL.size or header[:4] != b"PK\x01\x02":
                raise zipfile.BadZipFile("bad central directory entry")
            name_len, extra_len, comment_len = CENTRAL.unpack(header)[12:15]
            files += not f.read(name_len).endswith(b"/")
            f.seek(extra_len + comment_len, 1)
            walked += CENTRAL.size + name_len + extra_len + comment_len
            records += 1
            if records > most:
                raise UploadRefused(f"the zip has more than {most} entries; at most "
                                    f"{max_entries} files are taken at once")
    if files > max_entries:
        raise _too_many_files(files, max_entries)


def _central_directory(f):
    """Return a zip's (entries claimed, central directory start, its size), ZIP64 or not."""
    f.seek(0, 2)
    length = f.tell()
    tail_start = max(0, length - END.size - 0xFFFF)  # the record, then a comment of up to 64 KiB
    f.seek(tail_start)
    tail = f.read()
    # Where zipfile looks: right at the end (no comment), else the last signature in the tail.
    at = len(tail) - END.size
    if at < 0 or tail[at:at + 4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < END.size:
        raise zipfile.BadZipFile("no end of central directory record")
    claimed, size = END.unpack_from(tail, at)[4:6]
    end = tail_start + at
    if end >= END64_LOCATOR.size:
        f.seek(end - END64_LOCATOR.size)
        if f.read(4) == b"PK\x06\x07":  # ZIP64: the counts are in the record before the locator
            end -= END64_LOCATOR.size + END64.size
            f.seek(max(end, 0))
            record = f.read(END64.size)
            if end < 0 or len(record) < END64.size or record[:4] != b"PK\x06\x06":
                raise zipfile.BadZipFile("bad ZIP64 end of central directory record")
            claimed, size = END64.unpack(record)[7:9]
    if size > end:
        raise zipfile.BadZipFile("the central directory overlaps the start of the file")
    return claimed, end - size, size


def _safe_parts(name):
    """Return a zip entry's path as parts, or None if it could leave the archive."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return None if not parts or ".." in parts else parts


def _hidden(parts):
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] in SKIPPED_NAMES


def _is_link(info):
    return stat.S_ISLNK(info.external_attr >> 16)


def zip_entries(zf, default_label=None, max_entries=MAX_ZIP_ENTRIES, max_bytes=MAX_ZIP_BYTES):
    """Return the entries of a zip of class folders; raise UploadRefused over the caps.

    The first folder names the class (a single folder wrapping all the class folders is looked
    through); files at the top go to `default_label`. Entries that are absolute, climb out with
    `..`, or are links are refused one by one; hidden and system files are left out.
    """
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > max_entries:
        raise _too_many_files(len(infos), max_entries)
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise UploadRefused(f"the zip unpacks to {declared / 1e6:.0f} MB; at most "
                            f"{max_bytes / 1e6:.0f} MB are taken at once")
    paths = {i.filename: _safe_parts(i.filename) for i in infos}
    kept = [p for p in paths.values() if p and not _hidden(p)]
    # One folder around everything, with class folders in it (a zip of the "bears" folder).
    wrapped = (bool(kept) and all(len(p) >= 2 and p[0] == kept[0][0] for p in kept)
               and any(len(p) >= 3 for p in kept))
    entries = []
    for info in infos:
        parts = paths[info.filename]
        if parts is None:
            entries.append(Entry(info.filename, None, "refused: the path leads out of the archive"))
        elif _is_link(info):
            entries.append(Entry(info.filename, None, "refused: a link, not a picture"))
        elif not _hidden(parts):
            parts = parts[1:] if wrapped else parts
            entries.append(_labelled(info, parts[0] if len(parts) > 1 else default_label))
    return entries


def _labelled(info, label):
    try:
        return Entry(info.filename, check_class_name(label) if label else None, source=info)
    except StoreError as e:
        return Entry(info.filename, None, f"the folder name is not a class name: {e}")


def _zip_reader(zf, max_bytes):
    """Return read(entry) for a zip: the entry's bytes, counted against the archive's cap."""
    left = [max_bytes]

    def read(entry):
        with zf.open(entry.source) as f:
            data = f.read(left[0] + 1)  # zipfile stops at the declared size; this is the cap
        left[0] -= len(data)
        if left[0] < 0:
            raise UploadRefused(f"the zip unpacks to more than {max_bytes / 1e6:.0f} MB")
        return data

    return read


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


def zip_labels(data_dir, token, label=None, max_entries=MAX_ZIP_ENTRIES, max_bytes=MAX_ZIP_BYTES):
    """Return {class: files} that a staged zip's entries would go to (refused ones left out)."""
    with _open_zip(staged_folder(data_dir, token) / ZIP_NAME, max_entries) as zf:
        entries = zip_entries(zf, label, max_entries, max_bytes)
    return Counter(e.label for e in entries if e.label and not e.refusal)


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
            with _open_zip(folder / ZIP_NAME, max_entries) as zf:
                entries = zip_entries(zf, label, max_entries, max_bytes)
                for entry in entries:
                    entry.label = label_map.get(entry.label, entry.label)
                run(entries, _zip_reader(zf, max_bytes), "zip")
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
