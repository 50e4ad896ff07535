"""A zip of class folders, read under caps: its entries, each with the class its folder names.

Nothing is ever extracted to disk: entries are read into memory, counted against the caps, and
their paths only ever name a class. The caps are checked from the zip's end records and central
directory before zipfile is let near the file.
"""
import re
import stat
import struct
import zipfile
from collections import Counter

from webapp.dataset.store import StoreError, check_class_name
from webapp.ingest.entries import Entry, UploadRefused
from webapp.ingest.folders import SKIPPED_NAMES

MAX_ZIP_ENTRIES = 20_000
MAX_ZIP_BYTES = 2 * 1024 ** 3  # uncompressed, all entries together
# A zip's end records and central directory entries (APPNOTE 4.3.12-16), read before zipfile is
# let near the file: its ZipFile builds an object for every entry the central directory holds.
END = struct.Struct("<4s4H2LH")
END64_LOCATOR = struct.Struct("<4sLQL")
END64 = struct.Struct("<4sQ2H2L4Q")
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")


def open_zip(path, max_entries):
    """Open a zip, refusing one that is damaged, not a zip, or over the entry cap."""
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


def zip_reader(zf, max_bytes):
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


def zip_labels(path, label=None, max_entries=MAX_ZIP_ENTRIES, max_bytes=MAX_ZIP_BYTES):
    """Return {class: files} that a zip's entries would go to (refused ones left out)."""
    with open_zip(path, max_entries) as zf:
        entries = zip_entries(zf, label, max_entries, max_bytes)
    return Counter(e.label for e in entries if e.label and not e.refusal)
