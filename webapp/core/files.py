"""Durable file writes: a reader sees the old file or the whole new one, never a part of either.

Every write goes to a temp file beside its target (same directory, so same file system), is
flushed and fsynced, then renamed over the target; the directory is fsynced last so the rename
itself survives a power cut. Any failure removes the temp file and leaves the target as it was.
"""
import contextlib
import fcntl
import hashlib
import os
import secrets
from pathlib import Path

MODES = ("w", "wb")


def fsync_dir(path):
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path):
    """Return the sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open_temp(path, perms):
    """Create a new hidden temp file beside `path`; return its fd and name."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o666 if perms is None else perms)
        except FileExistsError:
            continue
        if perms is not None:
            os.fchmod(fd, perms)  # exactly these, whatever the umask
        return fd, tmp
    raise FileExistsError(f"no free temp name beside {path}")


@contextlib.contextmanager
def _written_temp(path, mode, encoding, newline, perms):
    """Yield (file, temp name) of a new temp file beside `path`; fsync it, or remove it on error."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    fd, tmp = _open_temp(path, perms)
    try:
        try:
            f = os.fdopen(fd, mode, encoding=encoding, newline=newline)
        except BaseException:
            with contextlib.suppress(OSError):  # open() may have closed it already
                os.close(fd)
            raise
        with f:
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w", *, encoding=None, newline=None, perms=None):
    """Open `path` for writing as a temp file that replaces it whole when the block ends cleanly.

    `mode` is "w" (text) or "wb" (binary); `encoding` and `newline` are open()'s. New files get
    open()'s permissions (0o666 less the umask) unless `perms` says otherwise. If the block
    raises, the temp file is removed and `path` is left exactly as it was.
    """
    path = Path(path)
    with _written_temp(path, mode, encoding, newline, perms) as (f, tmp):
        yield f
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path, data, *, encoding="utf-8", perms=None):
    """Replace `path` whole with `data` (bytes, or str written in `encoding`)."""
    if isinstance(data, str):
        with atomic_write(path, "w", encoding=encoding, newline="", perms=perms) as f:
            f.write(data)
    else:
        with atomic_write(path, "wb", perms=perms) as f:
            f.write(data)


def create_whole(path, data, *, encoding="utf-8", perms=None):
    """Create `path` whole with `data`; raise FileExistsError if it already exists.

    The data is written and fsynced under a temp name, then hard-linked to `path`: the link
    fails if another writer got there first, and whoever wins, `path` is never seen partial.
    """
    path = Path(path)
    text = isinstance(data, str)
    opened = _written_temp(path, "w" if text else "wb", encoding if text else None,
                           "" if text else None, perms)
    with opened as (f, tmp):
        f.write(data)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive lock on `path` (created if missing) across processes, until the end."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes, even on a crash
        yield
    finally:
        os.close(fd)
