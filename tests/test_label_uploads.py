"""Uploads: many pictures at once, and zips of class folders that cannot reach outside them."""
import io
import random
import stat
import zipfile

import pytest

from tests.pictures import jpeg, tinted
from tests.test_jobs import wait_for
from webapp.dataset.store import Dataset
from webapp.ingest import uploads, zips
from webapp.jobs import runner as jobs


def picture(seed, label="red"):
    return jpeg(tinted(label, random.Random(seed), 40))


def upload(client, admin, files, label="", path="/label/upload"):
    data = {"files": [(io.BytesIO(b), name) for name, b in files], "label": label,
            "csrf_token": admin.csrf_token()}
    return client.post(path, data=data, content_type="multipart/form-data")


def test_an_admin_uploads_many_files_and_sees_each_outcome(app, admin, client):
    client.post("/label/classes", data={"name": "red", "csrf_token": admin.csrf_token()})
    first = upload(client, admin, [("a.jpg", picture(1))], label="red")
    assert first.status_code == 200
    r = upload(client, admin, [("b.jpg", picture(2)), ("c.png", picture(3)),
                               ("again.jpg", picture(1)), ("notes.txt", b"shopping list"),
                               ("empty.jpg", b"")], label="red")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    assert "Stored 2, duplicates 1, rejected 2." in page
    assert page.count('class="stored"') == 2 and page.count('class="rejected"') == 2
    assert 'same picture as <a class="image-link" href="/media/1">image #1</a>' in page
    assert "not an image Winnow accepts" in page and "the file is empty" in page
    ds = Dataset(app.config["DATA_DIR"])
    assert sum(ds.class_counts()["red"].values()) == 3
    ds.close()
    overview = client.get("/label/").get_data(as_text=True)
    assert "stored: 2" in overview and "rejected: 2" in overview


def test_the_browser_sends_batches_and_gets_json_outcomes(app, admin, client):
    r = upload(client, admin, [("x.jpg", picture(5)), ("x-again.jpg", picture(5))],
               path="/label/upload.json")
    answer = r.get_json()
    assert r.status_code == 200
    assert [(i["key"], i["status"]) for i in answer["items"]] == [("x.jpg", "stored"),
                                                                 ("x-again.jpg", "duplicate")]
    assert answer["items"][0]["detail"] == "unlabeled"
    assert answer["items"][1]["url"] == f"/media/{answer['items'][0]['image_id']}"
    empty = upload(client, admin, [], path="/label/upload.json")
    assert empty.status_code == 400 and "Choose at least one picture" in empty.get_json()["error"]
    bad_class = upload(client, admin, [("y.jpg", picture(6))], label="../etc",
                       path="/label/upload.json")
    assert bad_class.status_code == 400
    assert "not a usable class name" in bad_class.get_json()["error"]
    ds = Dataset(app.config["DATA_DIR"])
    assert ds.unlabeled_count() == 1 and ds.class_names() == []
    ds.close()


def test_a_refused_upload_comes_back_on_its_form_with_the_class_kept(app, admin, client):
    for name in ("black", "red"):
        client.post("/label/classes", data={"name": name, "csrf_token": admin.csrf_token()})
    r = upload(client, admin, [], label="red")
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and 'id="upload-form"' in page
    assert "Choose at least one picture to upload." in page
    assert '<option value="red" selected>' in page
    r = client.post("/label/upload-zip", data={"label": "black", "csrf_token": admin.csrf_token()},
                    content_type="multipart/form-data")
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and 'id="zip-form"' in page
    assert "Choose a zip file of class folders." in page
    assert '<option value="black" selected>' in page


# ---- zips of class folders --------------------------------------------------------------------

def make_zip(entries, links=()):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


TRAVERSALS = ["../evil.jpg", "/etc/cron.d/evil.jpg", "bears/../../evil.jpg", "C:/evil.jpg",
              "..\\evil.jpg"]


def test_a_zip_entry_that_leads_out_of_the_archive_is_refused(tmp_path):
    archive = make_zip([("bears/grizzly/1.jpg", picture(1)), ("bears/black/2.jpg", picture(2)),
                        ("bears/3.jpg", picture(3))]
                       + [(name, picture(9)) for name in TRAVERSALS]
                       + [("__MACOSX/bears/._1.jpg", b"x"), ("bears/.DS_Store", b"x")],
                       links=[("bears/black/link.jpg", "/etc/passwd")])
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        entries = {e.name: e for e in zips.zip_entries(zf, default_label="bears")}
    assert entries["bears/grizzly/1.jpg"].label == "grizzly"
    assert entries["bears/black/2.jpg"].label == "black"
    assert entries["bears/3.jpg"].label == "bears"  # loose files go to the chosen class
    for name in TRAVERSALS:
        assert entries[name].refusal == "refused: the path leads out of the archive", name
    assert entries["bears/black/link.jpg"].refusal == "refused: a link, not a picture"
    assert "__MACOSX/bears/._1.jpg" not in entries and "bears/.DS_Store" not in entries


def test_a_wrapping_folder_is_looked_through_and_bad_folder_names_refused():
    archive = make_zip([("pets/cats/1.jpg", b"1"), ("pets/dogs/2.jpg", b"2"),
                        ("pets/<script>/3.jpg", b"3")])
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        entries = zips.zip_entries(zf)
    assert [(e.name, e.label) for e in entries[:2]] == [("pets/cats/1.jpg", "cats"),
                                                       ("pets/dogs/2.jpg", "dogs")]
    assert entries[2].refusal.startswith("the folder name is not a class name")
    one_class = make_zip([("cats/1.jpg", b"1"), ("cats/2.jpg", b"2")])
    with zipfile.ZipFile(io.BytesIO(one_class)) as zf:
        assert {e.label for e in zips.zip_entries(zf)} == {"cats"}


def test_zips_over_the_caps_are_refused_whole():
    many = make_zip([(f"a/{i}.jpg", b"x") for i in range(6)])
    with zipfile.ZipFile(io.BytesIO(many)) as zf, pytest.raises(uploads.UploadRefused,
                                                                 match="6 files; at most 5"):
        zips.zip_entries(zf, max_entries=5)
    # A bomb: 3 MB of zeros squeezes into a few kilobytes.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/bomb.jpg", b"\0" * 3_000_000)
    assert len(buf.getvalue()) < 10_000
    with zipfile.ZipFile(buf) as zf, pytest.raises(uploads.UploadRefused, match="unpacks to 3 MB"):
        zips.zip_entries(zf, max_bytes=1_000_000)


def test_an_admin_imports_a_zip_as_a_job_and_nothing_escapes(app, admin, client, tmp_path):
    archive = make_zip([("grizzly/1.jpg", picture(1)), ("grizzly/2.jpg", picture(2)),
                        ("black/3.jpg", picture(3, "blue")), ("black/4.jpg", picture(1)),
                        ("black/readme.txt", b"not a picture"), ("loose.jpg", picture(4))]
                       + [(name, picture(9)) for name in TRAVERSALS])
    r = client.post("/label/upload-zip", data={
        "archive": (io.BytesIO(archive), "bears.zip"), "label": "",
        "csrf_token": admin.csrf_token()}, content_type="multipart/form-data")
    assert r.status_code == 303
    job_id = int(r.headers["Location"].rsplit("/", 1)[1])
    data_dir = app.config["DATA_DIR"]
    job = wait_for(data_dir, job_id)
    assert job["status"] == "succeeded", jobs.read_log(data_dir, job_id)
    items = {i["key"]: i for i in jobs.items(data_dir, job_id)}
    assert items["black/4.jpg"]["status"] == "duplicate"
    assert items["black/4.jpg"]["image_id"] == items["grizzly/1.jpg"]["image_id"]
    assert items["black/readme.txt"]["status"] == "rejected"
    for name in TRAVERSALS:
        assert items[name]["status"] == "rejected" and "leads out" in items[name]["detail"]
    assert job["message"] == "Stored 4, duplicates 1, rejected 6."
    ds = Dataset(data_dir)
    counts = {k: sum(v.values()) for k, v in ds.class_counts().items()}
    assert counts == {"black": 1, "grizzly": 2} and ds.unlabeled_count() == 1
    ds.close()
    assert not list(tmp_path.rglob("evil.jpg"))
    assert not list((tmp_path / "data" / uploads.STAGING).iterdir())  # the staged zip is gone
    page = client.get(f"/label/imports/{job_id}").get_data(as_text=True)
    assert "refused: the path leads out of the archive" in page and "black/readme.txt" in page


def test_a_zip_over_the_caps_or_not_a_zip_is_refused_before_any_job(tmp_path, admin, client, app):
    app.config["ZIP_MAX_ENTRIES"] = 3
    too_many = make_zip([(f"a/{i}.jpg", picture(i)) for i in range(4)])
    for data, words in ((too_many, "4 files; at most 3"), (b"PK not really", "not a zip archive")):
        r = client.post("/label/upload-zip", data={"archive": (io.BytesIO(data), "x.zip"),
                                                  "csrf_token": admin.csrf_token()},
                        content_type="multipart/form-data")
        assert r.status_code == 400 and words in r.get_data(as_text=True)
    assert jobs.recent(app.config["DATA_DIR"]) == []
    assert not list((tmp_path / "data" / uploads.STAGING).iterdir())


def test_a_zip_larger_than_the_page_upload_cap_is_still_taken(tmp_path):
    from tests.conftest import AdminSession, make_app

    app = make_app(tmp_path / "data", MAX_CONTENT_LENGTH=1_000_000)
    admin = AdminSession(app.test_client())
    admin.login()
    rng = random.Random(5)
    big = [(f"red/{i}.png", _noise_png(rng)) for i in range(3)]  # about 1.2 MB together
    archive = make_zip(big)
    assert len(archive) > 1_000_000
    r = admin.client.post("/label/upload-zip", data={"archive": (io.BytesIO(archive), "big.zip"),
                                                     "csrf_token": admin.csrf_token()},
                          content_type="multipart/form-data")
    assert r.status_code == 303
    job = wait_for(app.config["DATA_DIR"], int(r.headers["Location"].rsplit("/", 1)[1]))
    assert job["message"] == "Stored 3, duplicates 0, rejected 0."
    # Without its CSRF token the same upload is refused, and nothing is started.
    r = admin.client.post("/label/upload-zip", data={"archive": (io.BytesIO(archive), "big.zip")},
                          content_type="multipart/form-data")
    assert r.status_code == 400 and len(jobs.recent(app.config["DATA_DIR"])) == 1


def _noise_png(rng, size=360):
    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(buf, "PNG")
    return buf.getvalue()
