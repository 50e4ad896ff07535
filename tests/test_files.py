"""Durable writes: a file is replaced whole or not at all, and the secret key is never half made."""
import hashlib
import json
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import AdminSession, make_app
from webapp import app as factory
from webapp.cleaning import scoring
from webapp.core import files


def crash(*a):
    raise OSError("disk full")


def test_a_write_lands_whole_and_readers_see_the_old_file_until_then(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with files.atomic_write(target, "w", encoding="utf-8") as f:
        json.dump({"accuracy": 0.9}, f)
        f.flush()
        assert target.read_text() == "old"
    assert json.loads(target.read_text()) == {"accuracy": 0.9}
    files.write_atomic(tmp_path / "bytes", b"\x00\xff")
    files.write_atomic(tmp_path / "text", "naïve\n")
    assert (tmp_path / "bytes").read_bytes() == b"\x00\xff"
    assert (tmp_path / "text").read_bytes() == "naïve\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bytes", "metrics.json", "text"]


def test_numpy_writes_through_the_helper(tmp_path):
    with files.atomic_write(tmp_path / "scores.npz", "wb") as f:
        np.savez(f, ids=np.arange(3))
    assert np.load(tmp_path / "scores.npz")["ids"].tolist() == [0, 1, 2]


def test_an_error_inside_the_block_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "cleaned.csv"
    target.write_text("name,label\n")
    with pytest.raises(RuntimeError):
        with files.atomic_write(target, "w") as f:
            f.write("half a ro")
            raise RuntimeError("interrupted")
    assert target.read_text() == "name,label\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cleaned.csv"]


def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "ACTIVE"
    target.write_text("v1\n")
    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(target, "v2\n")
    assert target.read_text() == "v1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ACTIVE"]


def test_the_file_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    steps = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        steps.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        steps.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    files.write_atomic(tmp_path / "thumb.jpg", b"jpeg")
    assert steps == ["fsync file", "replace", "fsync dir"]


def test_permissions_follow_open_unless_asked(tmp_path):
    umask = os.umask(0o022)
    try:
        files.write_atomic(tmp_path / "plain", "x")
        files.write_atomic(tmp_path / "private", "x", perms=0o600)
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600


def test_only_write_modes_are_offered(tmp_path):
    with pytest.raises(ValueError):
        with files.atomic_write(tmp_path / "log", "a"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_create_whole_never_replaces_an_existing_file(tmp_path):
    files.create_whole(tmp_path / "key", "first")
    with pytest.raises(FileExistsError):
        files.create_whole(tmp_path / "key", "second")
    assert (tmp_path / "key").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_file_sha256_hashes_the_bytes(tmp_path):
    data = os.urandom(3 << 20)  # more than one chunk
    (tmp_path / "export.pkl").write_bytes(data)
    assert files.file_sha256(tmp_path / "export.pkl") == hashlib.sha256(data).hexdigest()


def test_scores_json_is_written_after_its_npz(tmp_path, monkeypatch):
    written = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace",
                        lambda src, dst: (written.append(os.path.basename(dst)),
                                          real_replace(src, dst)))
    scoring.save_arrays(tmp_path / scoring.SCORES, tmp_path / scoring.SCORES_META,
                        {"images": 2}, ids=np.arange(2))
    assert written == [scoring.SCORES, scoring.SCORES_META]


# ---- the secret key ----------------------------------------------------------------------

def fake_secrets(monkeypatch, token_hex):
    """Give the app factory its own `secrets` (the helper's temp names still use the real one)."""
    monkeypatch.setattr(factory, "secrets", SimpleNamespace(token_hex=token_hex))


def start_two_workers(data_dir):
    """Create two apps on one data dir at the same time, as gunicorn's workers do."""
    with ThreadPoolExecutor(2) as pool:
        return [f.result() for f in [pool.submit(make_app, data_dir) for _ in range(2)]]


def test_two_workers_creating_the_key_at_once_share_one(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    both_looked = threading.Barrier(2, timeout=10)
    made = iter(["a" * 64, "b" * 64])

    def token_hex(n):
        key = next(made)
        both_looked.wait()  # each found no key file before either writes one
        if key == "b" * 64:
            time.sleep(0.2)  # the first worker has written its key and read it back by now
        return key

    fake_secrets(monkeypatch, token_hex)
    apps = start_two_workers(data_dir)
    key = (data_dir / "secret_key").read_text()
    assert key == "a" * 64  # the late worker did not overwrite it
    assert [a.secret_key for a in apps] == [key, key]
    assert stat.S_IMODE((data_dir / "secret_key").stat().st_mode) == 0o600
    assert not list(data_dir.glob(".secret_key*"))


def test_an_empty_key_file_is_replaced_with_a_key_that_keeps_you_logged_in(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text(" \n")  # an older version crashed while writing it
    app = make_app(data_dir)
    key = (data_dir / "secret_key").read_text()
    assert len(key) == 64 and app.secret_key == key
    assert stat.S_IMODE((data_dir / "secret_key").stat().st_mode) == 0o600
    client = app.test_client()
    assert AdminSession(client).login().status_code == 302
    assert client.get("/admin/").status_code == 200
    assert make_app(data_dir).secret_key == key  # the next start reads the same key


def test_two_workers_finding_an_empty_key_file_agree_on_its_replacement(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("")
    made = iter(["c" * 64, "d" * 64])

    def token_hex(n):
        time.sleep(0.2)  # long enough for the other worker to find the file empty too
        return next(made)

    fake_secrets(monkeypatch, token_hex)
    apps = start_two_workers(data_dir)
    key = (data_dir / "secret_key").read_text()
    assert key in ("c" * 64, "d" * 64)
    assert [a.secret_key for a in apps] == [key, key]
