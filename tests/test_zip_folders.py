"""A zip whose folders look like existing classes ('Two/' beside 'two') asks where they go first."""
import io
import random
import re
from pathlib import Path

from tests.pictures import jpeg, tinted
from tests.test_jobs import wait_for
from tests.test_label_uploads import make_zip
from webapp.dataset import classnames
from webapp.dataset.store import Dataset
from webapp.ingest import uploads
from webapp.jobs import runner


def picture(seed):
    return jpeg(tinted("red", random.Random(seed), 40))


def send_zip(client, admin, entries, label=""):
    return client.post("/label/upload-zip", data={
        "archive": (io.BytesIO(make_zip(entries)), "numbers.zip"), "label": label,
        "csrf_token": admin.csrf_token()}, content_type="multipart/form-data")


def jobs_of(app):
    return runner.recent(app.config["DATA_DIR"], "upload")


def counts(ds):
    return {name: n["train"] + n["valid"] for name, n in ds.class_counts().items()}


def test_folders_go_to_the_class_they_look_like_or_to_their_biggest_look_alike():
    targets = classnames.folder_targets({"Two": 3, "threes": 2, "four": 2, "Four": 1, "five": 1},
                                        {"two": 5, "three": 5, "TWO": 1})
    assert targets == {"Two": "two", "threes": "three", "Four": "four"}


def test_an_admin_maps_look_alike_folders_onto_existing_classes(app, admin, client):
    ds = Dataset(app.config["DATA_DIR"])
    for i, label in enumerate(["two", "two", "three"]):
        ds.add_image(picture(i), label=label)
    r = send_zip(client, admin, [("Two/1.jpg", picture(10)), ("Two/2.jpg", picture(11)),
                                 ("threes/3.jpg", picture(12)), ("four/4.jpg", picture(13))])
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and "2 folders look like another class" in page
    assert re.search(r"<code>Two/</code></td>\s*<td>2</td>\s*<td>the class &#39;two&#39;", page)
    assert '<option value="two" selected>two</option>' in page
    assert not list(jobs_of(app))  # nothing is imported yet
    action = re.search(r'id="zip-map-form" method="post" action="([^"]+)"', page).group(1)
    r = client.post(action, data={"folder": ["Two", "threes"], "into": ["two", "threes"],
                                  "label": "", "csrf_token": admin.csrf_token()})
    assert r.status_code == 303
    job = wait_for(app.config["DATA_DIR"], int(r.headers["Location"].rsplit("/", 1)[1]))
    assert job["message"] == "Stored 4, duplicates 0, rejected 0."
    assert counts(ds) == {"two": 4, "three": 1, "threes": 1, "four": 1}
    assert (ds.data_dir / "cleaned.csv").read_text().count(",two,") == 4
    ds.close()


def test_a_zip_with_no_look_alikes_is_imported_at_once(app, admin, client):
    r = send_zip(client, admin, [("two/1.jpg", picture(1)), ("three/2.jpg", picture(2))])
    assert r.status_code == 303 and "/label/imports/" in r.headers["Location"]


def test_a_mapping_to_a_bad_name_or_a_gone_upload_is_refused(app, admin, client):
    Dataset(app.config["DATA_DIR"]).add_image(picture(1), label="two")
    page = send_zip(client, admin, [("Two/1.jpg", picture(2))]).get_data(as_text=True)
    action = re.search(r'id="zip-map-form" method="post" action="([^"]+)"', page).group(1)
    r = client.post(action, data={"folder": "Two", "into": "../etc",
                                  "csrf_token": admin.csrf_token()})
    assert r.status_code == 400 and "not a usable class name" in r.get_data(as_text=True)
    for token in ("0123456789abcdef", "..%2F..%2Fsecret"):
        r = client.post(f"/label/upload-zip/{token}", data={"csrf_token": admin.csrf_token()})
        assert r.status_code in (400, 404)
    r = client.post("/label/upload-zip/0123456789abcdef", data={"csrf_token": admin.csrf_token()})
    assert "upload is gone" in r.get_data(as_text=True)
    assert not list(jobs_of(app))
    assert len(list((Path(app.config["DATA_DIR"]) / uploads.STAGING).iterdir())) == 1  # kept a day
