"""Hardening a stranger meets: private pictures, ids past the store, quiet fetch errors, capped
zips read before they are parsed, a private data dir, and /metrics only for chosen networks."""
import io
import logging
import os
import random
import re
import stat
import struct
import types
import zipfile

import pytest
from werkzeug.exceptions import NotFound

from tests.conftest import AdminSession, make_app
from tests.pictures import encode, tinted
from webapp.core import db
from webapp.dataset.store import Dataset
from webapp.ingest import uploads, zips

HUGE = "99999999999999999999999"  # past SQLite's 64-bit integers


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def make_zip(names):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(name, b"x")
    return buf.getvalue()


def test_an_admins_pictures_are_kept_out_of_caches(app, admin, client):
    ds = Dataset(app.config["DATA_DIR"])
    image_id = ds.add_image(encode(tinted("red", random.Random(1), 64), "PNG")).image_id
    ds.close()
    for url in (f"/media/{image_id}", f"/media/{image_id}?size=128"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["Cache-Control"] == "private, no-store"


def test_ids_too_large_for_the_store_are_not_found(app, admin, client):
    token = admin.csrf_token()
    for url in (f"/media/{HUGE}", f"/jobs/{HUGE}", f"/jobs/{HUGE}.json",
                f"/label/imports/{HUGE}"):
        r = client.get(url)
        assert r.status_code == 404, url
    for url in (f"/jobs/{HUGE}/cancel", f"/label/queue/{HUGE}/skip",
                f"/label/queue/{HUGE}/delete", f"/clean/history/{HUGE}/undo",
                f"/clean/kept/{HUGE}/undo"):
        r = client.post(url, data={"csrf_token": token})
        assert r.status_code == 404, url
    assert "There is nothing here." in client.get(f"/jobs/{HUGE}.json").get_json()["error"]
    assert client.get("/label/queue").status_code == 200  # the skip never reached the session
    assert client.get(f"/jobs/1.json?after={HUGE}").status_code == 404  # a number in a query
    # Every route with an <int:...> refuses it, however it was added.
    urls = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        if "<int:" in rule.rule:
            url = re.sub(r"<int:\w+>", HUGE, re.sub(r"<(?!int:)[^>]+>", "x", rule.rule))
            with pytest.raises(NotFound):
                urls.match(url, method=sorted(rule.methods - {"HEAD", "OPTIONS"})[0])


def test_an_overflow_that_is_not_the_stores_is_still_a_failure(tmp_path):
    app = make_app(tmp_path / "data")

    def broken():
        raise OverflowError("math range error")

    app.add_url_rule("/broken", "broken", broken)
    assert app.test_client().get("/broken").status_code == 500


def blocked_client(app):
    app.extensions["winnow.model"].classifier = types.SimpleNamespace(version="fake")
    return app.test_client()


def test_a_stranger_is_not_told_where_a_blocked_address_leads(app, caplog):
    client = blocked_client(app)
    with caplog.at_level(logging.INFO, logger=app.logger.name):
        r = client.get("/classify-url?url=http://127.0.0.1:9/x.jpg")
    assert r.status_code == 400 and "127.0.0.1" not in r.get_data(as_text=True)
    assert r.get_json()["error"] == "the address cannot be fetched from here"
    assert "127.0.0.1" in caplog.text  # the operator still learns what happened
    page = client.post("/classify", data={"url": "http://127.0.0.1:9/x.jpg",
                                          "csrf_token": AdminSession(client).csrf_token()})
    text = page.get_data(as_text=True)
    assert page.status_code == 400 and "127.0.0.1:9/x.jpg" in text  # what they typed, kept
    assert "private or reserved" not in text and "cannot be fetched from here" in text
    bad = client.get("/classify-url?url=ftp://example.org/x.jpg")  # their own mistake: said
    assert bad.status_code == 400 and "only http and https" in bad.get_json()["error"]


def test_an_admin_is_told_why_an_address_was_refused(app):
    client = blocked_client(app)
    admin = AdminSession(client)
    admin.login()
    r = client.get("/classify-url?url=http://127.0.0.1:9/x.jpg")
    assert r.status_code == 400
    assert "private or reserved address (127.0.0.1)" in r.get_json()["error"]
    page = client.post("/classify", data={"url": "http://127.0.0.1:9/x.jpg",
                                          "csrf_token": admin.csrf_token()})
    assert "private or reserved" in page.get_data(as_text=True)


def never_parse(monkeypatch):
    """Fail the test if the upload code builds a ZipFile (it must refuse before that)."""
    def refuse(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile was constructed")

    monkeypatch.setattr(zips.zipfile, "ZipFile", refuse)


def test_a_zip_over_the_entry_cap_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    archive = make_zip([f"a/{i}.jpg" for i in range(4)])
    never_parse(monkeypatch)
    with pytest.raises(uploads.UploadRefused, match="4 files; at most 3"):
        uploads.stage_zip(tmp_path, lambda p: p.write_bytes(archive), max_entries=3)
    assert not list((tmp_path / uploads.STAGING).iterdir())


def claims(archive, count):
    """Return the zip with its end record claiming `count` entries."""
    at = archive.rfind(b"PK\x05\x06")
    return archive[:at + 8] + struct.pack("<2H", count, count) + archive[at + 12:]


def as_zip64(archive, count=None):
    """Return the zip with ZIP64 end records (the form for more than 65,535 entries)."""
    at = archive.rfind(b"PK\x05\x06")
    _, _, _, _, entries, size, offset, _ = zips.END.unpack_from(archive, at)
    count = entries if count is None else count
    record = zips.END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
    locator = zips.END64_LOCATOR.pack(b"PK\x06\x07", 0, at, 1)
    end = zips.END.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return archive[:at] + record + locator + end


def test_the_entry_count_is_read_from_the_end_records_and_not_trusted(tmp_path, monkeypatch):
    four = make_zip([f"a/{i}.jpg" for i in range(4)])
    path = tmp_path / "x.zip"
    for archive, words in ((claims(four, 60_000), "60000 entries; at most 3 files"),
                           (claims(four, 1), "4 files; at most 3"),  # zipfile reads all four
                           (as_zip64(four, 70_000), "70000 entries"),
                           (as_zip64(four), "4 files; at most 3")):
        path.write_bytes(archive)
        with pytest.raises(uploads.UploadRefused, match=words):
            zips._count_entries(path, 3)
    path.write_bytes(as_zip64(four))
    with zipfile.ZipFile(path) as zf:  # the ZIP64 form made here is one zipfile reads too
        assert len(zf.infolist()) == 4
    zips._count_entries(path, 4)
    # Claiming one entry, it holds four records: the walk stops past twice the cap and one.
    path.write_bytes(claims(four, 1))
    never_parse(monkeypatch)
    with pytest.raises(uploads.UploadRefused, match="more than 3 entries"):
        zips._count_entries(path, 1)


def test_a_zip_within_the_cap_with_its_folders_is_still_taken(tmp_path):
    archive = make_zip(["bears/", "bears/a/", "bears/a/1.jpg", "bears/b/", "bears/b/2.jpg"])
    token = uploads.stage_zip(tmp_path, lambda p: p.write_bytes(archive), max_entries=2)
    assert (tmp_path / uploads.STAGING / token / uploads.ZIP_NAME).exists()
    path = tmp_path / "comment.zip"
    with zipfile.ZipFile(path, "w") as zf:  # a comment holding what looks like an end record
        zf.writestr("a/1.jpg", b"x")
        zf.comment = b"PK\x05\x06 not the end" + b"." * 1000
    with pytest.raises(uploads.UploadRefused, match="not a zip archive"):
        zips.open_zip(path, 1)  # zipfile takes the comment's signature too: so do we
    for junk in (b"", b"PK\x05\x06", b"no zip here" * 10):
        path.write_bytes(junk)
        with pytest.raises(uploads.UploadRefused, match="not a zip archive"):
            zips.open_zip(path, 5)


def test_a_fresh_app_keeps_its_data_dir_and_store_private(tmp_path):
    data = tmp_path / "data"
    old = os.umask(0o022)  # the common umask, under which files come out world-readable
    try:
        make_app(data)
        Dataset(data).close()
        assert mode(data) == 0o700 and mode(data / db.DB_NAME) == 0o600
        with db.session(data) as conn:  # a write makes the -wal file: it takes the store's mode
            db.set_setting(conn, "probe", "1")
            assert mode(data / f"{db.DB_NAME}-wal") == 0o600
    finally:
        os.umask(old)
    data.chmod(0o755)  # an existing data dir of ours is made private too
    make_app(data)
    assert mode(data) == 0o700


@pytest.mark.parametrize("address, status", [
    ("10.1.2.3", 200), ("::ffff:10.9.9.9", 200), ("192.168.1.5", 404), ("2001:db8::1", 404)])
def test_metrics_answer_only_the_chosen_networks(tmp_path, address, status):
    app = make_app(tmp_path / "data", METRICS_ALLOW_NETS="10.0.0.0/8, 127.0.0.1/32")
    client = app.test_client()
    r = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert r.status_code == status
    assert (b"winnow_requests_total" in r.data) == (status == 200)


def test_metrics_answer_everyone_by_default(client):
    r = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert r.status_code == 200 and b"winnow_requests_total" in r.data
