"""Labeling pages: classes that can be undone, the queue, the model's help, and who may do what."""
import io
import random
import re

import pytest

from tests.conftest import AdminSession, make_app
from tests.pictures import jpeg, tinted
from tests.test_jobs import wait_for
from webapp.dataset import unlabeled
from webapp.dataset.store import Dataset
from webapp.jobs import runner as jobs
from webapp.model.classifier import Prediction


def picture(seed, size=40, label="red"):
    return jpeg(tinted(label, random.Random(seed), size))


def post(client, admin, path, **data):
    return client.post(path, data={**data, "csrf_token": admin.csrf_token()})


def counts_on(page):
    """Return {class: (train, valid, total)} as the overview's table shows them."""
    rows = re.findall(r'<tr data-class="([^"]+)">\s*<td><strong>[^<]+</strong></td>'
                      r'<td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>', page)
    return {name: tuple(map(int, n)) for name, *n in rows}


@pytest.fixture
def store(app):
    ds = Dataset(app.config["DATA_DIR"])
    yield ds
    ds.close()


# ---- classes --------------------------------------------------------------------------------

def test_an_admin_builds_classes_and_sees_counts_per_split(app, admin, client, store):
    for name in ("grizzly", "black"):
        assert post(client, admin, "/label/classes", name=name).status_code == 303
    added = [store.add_image(picture(i), label="grizzly") for i in range(6)]
    store.add_image(picture(50), label=None)
    page = client.get("/label/").get_data(as_text=True)
    valid = sum(store.image(a.image_id)["is_valid"] for a in added)
    assert counts_on(page) == {"black": (0, 0, 0), "grizzly": (6 - valid, valid, 6)}
    assert '<strong id="unlabeled-count">1</strong>' in page
    assert "Label the queue (1 unlabeled)" in page


def test_renaming_and_deleting_a_class_can_be_undone(app, admin, client, store):
    post(client, admin, "/label/classes", name="grizly")
    ids = [store.add_image(picture(i), label="grizly").image_id for i in range(3)]
    r = post(client, admin, "/label/classes/grizly/rename", new_name="grizzly")
    assert r.status_code == 303
    assert {store.image(i)["label"] for i in ids} == {"grizzly"}

    r = post(client, admin, "/label/classes/grizzly/delete", images_to="unlabel")
    assert r.status_code == 303
    assert store.class_names() == [] and store.unlabeled_count() == 3
    page = client.get("/label/").get_data(as_text=True)
    assert "deleted class &#39;grizzly&#39;; its 3 images unlabeled" in page
    change_id = re.search(r'name="change_id" value="(\d+)"', page).group(1)
    assert post(client, admin, "/label/undo", change_id=change_id).status_code == 303
    assert store.class_names() == ["grizzly"]
    assert {store.image(i)["label"] for i in ids} == {"grizzly"}

    post(client, admin, "/label/classes/grizzly/delete", images_to="delete")
    assert all(store.image(i)["deleted"] for i in ids) and store.unlabeled_count() == 0
    assert "grizzly" not in (store.data_dir / "cleaned.csv").read_text()
    page = client.get("/label/").get_data(as_text=True)
    change_id = re.search(r'name="change_id" value="(\d+)"', page).group(1)
    post(client, admin, "/label/undo", change_id=change_id)
    assert not any(store.image(i)["deleted"] for i in ids)
    assert all(store.file_path(store.image(i)).exists() for i in ids)
    assert (store.data_dir / "cleaned.csv").read_text().count(",grizzly,") == 3


@pytest.mark.parametrize("path, data, words", [
    ("/label/classes", {"name": "../etc"}, "not a usable class name"),
    ("/label/classes", {"name": ""}, "not a usable class name"),
    ("/label/classes/nope/rename", {"new_name": "yes"}, "There is no class"),
    ("/label/classes/nope/delete", {"images_to": "unlabel"}, "There is no class"),
    ("/label/classes/nope/delete", {"images_to": "burn"}, "become unlabeled or are deleted"),
    ("/label/undo", {}, "Say which change to undo"),
    ("/label/undo", {"change_id": "999"}, "does not exist"),
])
def test_bad_class_requests_are_refused_with_the_reason(admin, client, path, data, words):
    r = post(client, admin, path, **data)
    assert r.status_code == 400 and words in r.get_data(as_text=True)


def test_a_refused_class_form_comes_back_with_the_reason_and_what_was_typed(admin, client):
    post(client, admin, "/label/classes", name="grizzly")
    r = post(client, admin, "/label/classes", name="../etc")
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and 'id="new-class"' in page  # the overview, not an error page
    assert 'value="../etc" autofocus' in page and "is not a usable class name" in page
    r = post(client, admin, "/label/classes/grizzly/rename", new_name="grizzly/brown")
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and 'value="grizzly/brown" autofocus' in page
    r = post(client, admin, "/label/classes", name="grizzly")  # there already: a no-op
    assert "There is a class &#39;grizzly&#39; already: nothing changed." in client.get(
        r.headers["Location"]).get_data(as_text=True)


def test_class_changes_keep_their_undo_after_a_large_import(admin, client, store):
    for name in ("black", "grizzly"):
        post(client, admin, "/label/classes", name=name)
    for i in range(420):  # a zip's worth of pictures: an event each
        store.add_image(picture(i, size=8), label="grizzly", write_csv=False)
    page = client.get("/label/").get_data(as_text=True)
    assert "created class &#39;black&#39;" in page and "created class &#39;grizzly&#39;" in page
    grizzly, black = re.findall(r'name="change_id" value="(\d+)"', page)  # the newest first
    r = post(client, admin, "/label/undo", change_id=grizzly)
    assert r.status_code == 400 and "has 420 images now" in r.get_data(as_text=True)
    r = post(client, admin, "/label/undo", change_id=black)
    assert "Undone: created class &#39;black&#39;." in client.get(
        r.headers["Location"]).get_data(as_text=True)
    assert store.class_names() == ["grizzly"]


def test_a_duplicate_class_name_is_refused_and_a_merge_offered(admin, client):
    post(client, admin, "/label/classes", name="a")
    post(client, admin, "/label/classes", name="b")
    r = post(client, admin, "/label/classes/a/rename", new_name="b")
    page = r.get_data(as_text=True)
    assert r.status_code == 409 and "exists already" in page
    assert "Merge &#39;a&#39; into &#39;b&#39;" in page


# ---- the queue --------------------------------------------------------------------------------

def shown(client, order="added"):
    page = client.get(f"/label/queue?order={order}").get_data(as_text=True)
    found = re.search(r'id="queue" data-image="(\d+)"', page)
    return (int(found.group(1)) if found else None), page


def test_the_queue_labels_skips_deletes_and_undoes(app, admin, client, store):
    for name in ("black", "grizzly"):
        post(client, admin, "/label/classes", name=name)
    a, b, c = (store.add_image(picture(i)).image_id for i in range(3))
    current, page = shown(client)
    assert current == a
    assert '<kbd>1</kbd> black' in page and '<kbd>2</kbd> grizzly' in page
    assert 'id="undo" disabled' in page  # nothing to undo yet

    assert post(client, admin, f"/label/queue/{a}/label", label="grizzly").status_code == 303
    assert store.image(a)["label"] == "grizzly"
    assert ",grizzly," in (store.data_dir / "cleaned.csv").read_text()
    assert shown(client)[0] == b
    r = post(client, admin, f"/label/queue/{b}/skip")
    current, page = shown(client)
    assert current == c and f"Skipped image #{b}: it comes back at the end of the queue." in page
    post(client, admin, f"/label/queue/{c}/delete")
    assert store.image(c)["deleted"]
    assert shown(client)[0] == b  # only the skipped one is left

    post(client, admin, "/label/queue/undo")  # brings the deleted picture back, first
    assert not store.image(c)["deleted"] and shown(client)[0] == c
    r = post(client, admin, "/label/queue/undo")  # then the label
    assert store.image(a)["label"] is None
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert f"Undone: image #{a}: unlabeled → &#39;grizzly&#39;." in page  # what it took back
    assert f'data-image="{a}"' in page
    r = post(client, admin, "/label/queue/undo")
    assert "Nothing to undo" in client.get(r.headers["Location"]).get_data(as_text=True)


def test_a_picture_labeled_in_another_tab_is_not_labeled_again(admin, client, store):
    post(client, admin, "/label/classes", name="black")
    post(client, admin, "/label/classes", name="grizzly")
    a = store.add_image(picture(1)).image_id
    post(client, admin, f"/label/queue/{a}/label", label="black")
    r = post(client, admin, f"/label/queue/{a}/label", label="grizzly")  # the stale page's click
    assert r.status_code == 303 and store.image(a)["label"] == "black"
    assert "was labeled meanwhile" in client.get(r.headers["Location"]).get_data(as_text=True)


def test_an_empty_queue_says_so(admin, client):
    current, page = shown(client)
    assert current is None and "Nothing left to label" in page


class FakeClassifier:
    """Sure of 'grizzly' in proportion to a picture's width: 30 px is 30% sure."""

    version = "fake-1"
    vocab = ["black", "grizzly"]

    def predict_batch(self, pictures):
        return [Prediction([("grizzly", p.width / 100), ("black", 1 - p.width / 100)])
                for p in pictures]


def test_the_queue_shows_the_models_suggestion_and_orders_by_confidence(app, admin, client, store):
    app.extensions["winnow.model"].classifier = FakeClassifier()
    for name in ("black", "grizzly"):
        post(client, admin, "/label/classes", name=name)
    ids = {size: store.add_image(picture(size, size)).image_id for size in (60, 30, 90)}
    current, page = shown(client)
    assert current == ids[60]
    assert "suggests\n          <strong>grizzly</strong> (60% sure)" in page
    assert 'class="class-button suggested"' in page and "has looked at 1 of the 3" in page

    unlabeled.suggest(store, FakeClassifier(), list(ids.values()))  # what the suggest job does
    assert shown(client, "least")[0] == ids[30]
    assert shown(client, "most")[0] == ids[90]
    assert "has looked at" not in shown(client, "most")[1]


def test_the_suggest_job_looks_at_every_unlabeled_image_with_the_active_model(trained_copy):
    data_dir, version, _ = trained_copy
    app = make_app(data_dir, LOAD_MODEL=True)
    client = app.test_client()
    admin = AdminSession(client)
    admin.login()
    ds = Dataset(data_dir)
    new = [ds.add_image(picture(100 + i, 32, label)).image_id for i, label in
           enumerate(["red", "blue", "red"])]
    current, page = shown(client, "least")
    assert f"Model <code>{version}</code> suggests" in page and "has looked at 1 of the 3" in page
    assert post(client, admin, "/label/queue/suggest", order="least").status_code == 303
    job = wait_for(data_dir, jobs.recent(data_dir, "suggest")[0]["id"], timeout=60)
    assert job["status"] == "succeeded", jobs.read_log(data_dir, job["id"])
    assert unlabeled.counts(ds.conn, version) == (3, 3)
    suggested = {w.id: w.suggested for w in unlabeled.queue(ds.conn, version, limit=10)}
    assert suggested == dict(zip(new, ["red", "blue", "red"], strict=True))
    ds.close()


# ---- from a classified picture back to the dataset --------------------------------------------

def test_an_admin_adds_a_classified_picture_to_the_dataset(trained_copy):
    data_dir, version, _ = trained_copy
    app = make_app(data_dir, LOAD_MODEL=True)
    visitor = app.test_client()
    token = AdminSession(visitor).csrf_token()
    pic = picture(7, 48, "red")
    public = visitor.post("/classify",
                          data={"file": (io.BytesIO(pic), "mine.jpg"), "csrf_token": token},
                          content_type="multipart/form-data").get_data(as_text=True)
    assert "It looks like" in public and "Add this picture" not in public

    client = app.test_client()
    admin = AdminSession(client)
    admin.login()
    page = client.post("/classify", data={"file": (io.BytesIO(pic), "mine.jpg"),
                                          "csrf_token": admin.csrf_token()},
                       content_type="multipart/form-data").get_data(as_text=True)
    assert "Add this picture to the dataset as" in page
    assert '<option value="red" selected>red (predicted)</option>' in page
    sha = re.search(r'name="sha256" value="([0-9a-f]{64})"', page).group(1)
    r = post(client, admin, "/label/from-classify", sha256=sha, label="blue", name="mine.jpg")
    assert r.status_code == 303 and r.headers["Location"] == "/"
    ds = Dataset(data_dir)
    row = ds.conn.execute("SELECT * FROM images WHERE source = 'classify'").fetchone()
    assert row["label"] == "blue" and row["original_name"] == "mine.jpg"
    ds.close()
    # Refused: the classify page again, ready for another picture, saying why.
    again = post(client, admin, "/label/from-classify", sha256=sha, label="")
    text = again.get_data(as_text=True)
    assert again.status_code == 400 and "no longer kept" in text
    assert 'name="file"' in text and "cannot join the dataset" in text
    forged = post(client, admin, "/label/from-classify", sha256="../../secret_key", label="")
    assert forged.status_code == 400 and 'name="file"' in forged.get_data(as_text=True)
    odd = post(client, admin, "/label/from-classify", sha256=sha, label="../x")
    assert odd.status_code == 400 and "cannot join the dataset" in odd.get_data(as_text=True)


# ---- nobody else ------------------------------------------------------------------------------

def label_routes(app):
    values = {"name": "grizzly", "image_id": 1, "job_id": 1}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/label"):
            path = rule.rule
            for key, value in values.items():
                path = re.sub(rf"<(int:)?{key}>", str(value), path)
            yield path, sorted(rule.methods - {"HEAD", "OPTIONS"})


def test_every_labeling_route_is_refused_without_login(app, client, store):
    store.add_image(picture(1), label="grizzly")
    token = AdminSession(client).csrf_token()  # a visitor can get a token; it is not enough
    routes = list(label_routes(app))
    assert len(routes) >= 15
    for path, methods in routes:
        for method in methods:
            r = client.open(path, method=method, data={"csrf_token": token, "name": "x",
                                                       "label": "x", "images_to": "delete"})
            if path.endswith(".json"):
                assert r.status_code == 401 and r.get_json() == {"error": "log in as admin first"}
            else:
                assert r.status_code == 302 and "/login" in r.headers["Location"], (method, path)
    assert store.class_names() == ["grizzly"] and store.image(1)["label"] == "grizzly"


def test_every_labeling_post_is_refused_without_a_csrf_token(app, admin, client, store):
    store.add_image(picture(1), label="grizzly")
    posts = [path for path, methods in label_routes(app) if "POST" in methods]
    assert len(posts) >= 12
    for path in posts:
        r = client.post(path, data={"name": "x", "label": "x", "images_to": "delete",
                                     "change_id": "1", "new_name": "y"})
        assert r.status_code == 400, path
        assert "security token is missing" in r.get_data(as_text=True), path
    assert store.class_names() == ["grizzly"] and store.image(1)["label"] == "grizzly"
    assert not store.image(1)["deleted"]
