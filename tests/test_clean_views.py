"""The cleaner's pages and JSON lists as an admin (and a stranger) uses them."""
import csv

import numpy as np
import pytest

from tests.cleaning_data import add_pictures, fake_cv_scores, fake_scores
from webapp.dataset.store import Dataset
from webapp.jobs import runner as jobs


@pytest.fixture
def scored(app):
    """Ten images, red and blue, scored by a made-up model that is unsure of a few."""
    ds = Dataset(app.config["DATA_DIR"])
    labels = ["red", "blue"] * 5
    ids = add_pictures(ds, labels, seed=11)
    p_red = [0.95, 0.1, 0.2, 0.05, 0.9, 0.7, 0.3, 0.15, 0.6, 0.02]
    emb = np.random.default_rng(0).normal(size=(10, 8))
    emb[3] = emb[2] + 0.01  # a near-copy
    fake_scores(ds.data_dir, ids, ["blue", "red"], [[1 - p, p] for p in p_red], embeddings=emb)
    ds.close()
    return ids, labels, p_red


def cleaned_csv(app):
    with open(f"{app.config['DATA_DIR']}/cleaned.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_strangers_are_sent_to_log_in(client, scored):
    assert client.get("/clean/").status_code == 302
    r = client.get("/clean/top-losses.json")
    assert r.status_code == 401 and r.get_json() == {"error": "log in as admin first"}


def test_without_scores_the_page_says_what_to_do_and_the_json_says_409(app, admin, client):
    page = client.get("/clean/").get_data(as_text=True)
    assert "There is no active model yet" in page
    r = client.get("/clean/label-issues.json")
    assert r.status_code == 409 and "no active model" in r.get_json()["error"]


def test_the_json_lists_carry_names_as_in_cleaned_csv_labels_and_scores(app, admin, client, scored):
    manifest = cleaned_csv(app)
    top = client.get("/clean/top-losses.json?limit=3").get_json()
    assert top["total"] == 10 and len(top["items"]) == 3 and top["ranked_by"] == "loss"
    for item in top["items"]:
        assert manifest[item["name"]]["label"] == item["label"]
        assert item["score"] == item["loss"]
    scores = [i["score"] for i in top["items"]]
    assert scores == sorted(scores, reverse=True)
    red = client.get("/clean/top-losses.json?label=red&split=both").get_json()
    assert red["total"] == 5 and {i["label"] for i in red["items"]} == {"red"}

    dups = client.get("/clean/duplicates.json?threshold=0.99").get_json()
    assert dups["total"] == 1
    pair = dups["items"][0]
    assert pair["score"] == pair["similarity"] >= 0.99
    assert {pair["first"]["name"], pair["second"]["name"]} <= set(manifest)

    issues = client.get("/clean/label-issues.json?limit=5").get_json()
    for item in issues["items"]:
        assert item["split"] == "valid" and item["name"] in manifest and "suggested" in item


@pytest.mark.parametrize("query, message", [
    ("split=test", "split must be one of"), ("limit=0", "limit must be between 1 and 1000"),
    ("limit=many", "limit must be a whole number"), ("offset=-1", "offset must be between"),
])
def test_bad_list_parameters_get_a_clear_400(admin, client, scored, query, message):
    r = client.get(f"/clean/top-losses.json?{query}")
    assert r.status_code == 400 and message in r.get_json()["error"]


def test_a_bad_threshold_gets_a_clear_400(admin, client, scored):
    r = client.get("/clean/duplicates.json?threshold=1.5")
    assert r.status_code == 400 and "threshold" in r.get_json()["error"]


def test_the_review_page_shows_images_by_loss_with_their_decisions(admin, client, scored):
    ids, labels, p_red = scored
    page = client.get("/clean/?label=red").get_data(as_text=True)
    reds = sorted((p, i) for i, lbl, p in zip(ids, labels, p_red, strict=True) if lbl == "red")
    positions = [page.index(f'data-image-id="{i}"') for _, i in reds]
    assert positions == sorted(positions)  # the least probable red first: the highest loss
    assert f'/media/{ids[2]}?size=256' in page and 'name="csrf_token"' in page
    assert "5 images by loss" in page


def test_the_confusion_matrix_cell_shows_exactly_its_validation_images(app, admin, client, scored):
    ids, labels, p_red = scored
    ds = Dataset(app.config["DATA_DIR"])
    valid = {r["id"] for r in ds.labeled() if r["is_valid"]}
    ds.close()
    wrong = {i for i, lbl, p in zip(ids, labels, p_red, strict=True) if lbl == "red" and p < 0.5}
    cell = wrong & valid
    assert cell and wrong - valid  # the generated split puts such images on both sides
    page = client.get("/clean/?actual=red&predicted=blue").get_data(as_text=True)
    assert "Confusion-matrix cell" in page
    assert {i for i in ids if f'data-image-id="{i}"' in page} == cell
    both = client.get("/clean/top-losses.json?actual=red&predicted=blue&split=both").get_json()
    assert {i["image_id"] for i in both["items"]} == wrong


def test_decisions_are_saved_at_once_in_cleaned_csv_and_undo_last_takes_them_back(
        app, admin, client, scored):
    ids, labels, _ = scored
    token = admin.csrf_token()
    r = client.post("/clean/decide", data={"action": "relabel", "image_id": [ids[2], ids[4]],
                                           "label": "blue", "csrf_token": token,
                                           "next": "/clean/?label=red"})
    assert r.status_code == 303 and r.location.endswith("/clean/?label=red")
    manifest = cleaned_csv(app)
    ds = Dataset(app.config["DATA_DIR"])
    assert manifest[ds.image(ids[2])["path"]]["label"] == "blue"
    assert manifest[ds.image(ids[4])["path"]]["label"] == "blue"

    r = client.post("/clean/decide",
                    data={"action": "delete", "image_id": ids[0], "csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert r.get_json() == {"message": "Deleted 1 image.", "changed": [ids[0]]}
    assert ds.image(ids[0])["path"] not in cleaned_csv(app)

    r = client.post("/clean/undo-last", data={"csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.get_json()["message"].startswith(f"Undone: deleted image #{ids[0]}")
    assert ds.image(ids[0])["path"] in cleaned_csv(app)
    r = client.post("/clean/undo-last", data={"csrf_token": token},
                    headers={"Accept": "application/json"})
    assert "Undone" in r.get_json()["message"]  # the two relabels, as one step
    manifest = cleaned_csv(app)
    assert [manifest[ds.image(i)["path"]]["label"] for i in (ids[2], ids[4])] == ["red", "red"]
    ds.close()


@pytest.mark.parametrize("form, message", [
    ({"action": "relabel", "image_id": "1"}, "choose the class"),
    ({"action": "burn", "image_id": "1"}, "unknown decision"),
    ({"action": "delete"}, "choose at least one image"),
    ({"action": "delete", "image_id": "x"}, "is not an image id"),
    ({"action": "delete", "image_id": "999"}, "no image with id 999"),
    ({"action": "relabel", "image_id": "1", "label": "../etc"}, "not a usable class name"),
    ({"action": "keep", "image_id": "1", "other_id": "two"}, "is not an image id"),
    ({"action": "keep", "image_id": "1", "other_id": "1"}, "a pair needs two different images"),
])
def test_bad_decisions_are_refused_with_a_reason_and_change_nothing(
        app, admin, client, scored, form, message):
    before = cleaned_csv(app)
    r = client.post("/clean/decide", data={**form, "csrf_token": admin.csrf_token()},
                    headers={"Accept": "application/json"})
    assert r.status_code == 400 and message in r.get_json()["error"]
    assert cleaned_csv(app) == before


def test_decisions_need_the_csrf_token(admin, client, scored):
    ids = scored[0]
    r = client.post("/clean/decide", data={"action": "delete", "image_id": ids[0]})
    assert r.status_code == 400


def test_history_lists_events_in_words_and_undoes_any_single_one(app, admin, client, scored):
    ids = scored[0]
    token = admin.csrf_token()
    client.post("/clean/decide", data={"action": "delete", "image_id": ids[1], "csrf_token": token})
    client.post("/clean/decide", data={"action": "relabel", "image_id": ids[5], "label": "red",
                                       "csrf_token": token})
    client.post("/clean/decide", data={"action": "keep", "image_id": ids[6], "csrf_token": token})
    page = client.get("/clean/history").get_data(as_text=True)
    assert f"deleted image #{ids[1]}" in page
    assert f"image #{ids[5]}: &#39;blue&#39; → &#39;red&#39;" in page
    assert f"kept image #{ids[6]} as labelled" in page
    ds = Dataset(app.config["DATA_DIR"])
    delete_event = next(e for e in ds.history() if e["kind"] == "delete")
    r = client.post(f"/clean/history/{delete_event['id']}/undo", data={"csrf_token": token})
    assert r.status_code == 303
    assert (f"Undone: deleted image #{ids[1]} (&#39;blue&#39;) (event #{delete_event['id']})."
            in client.get(r.location).get_data(as_text=True))  # says what it took back
    assert ds.image(ids[1])["deleted"] is None  # the older delete undone, the relabel stays
    assert ds.image(ids[5])["label"] == "red"
    r = client.post(f"/clean/history/{delete_event['id']}/undo", data={"csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.status_code == 400 and "undone already" in r.get_json()["error"]
    ds.close()


def test_rescoring_starts_a_score_job_with_the_chosen_folds(admin, client, scored, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "start", lambda d, kind, params: started.append((kind, params)) or 7)
    token = admin.csrf_token()
    r = client.post("/clean/rescore",
                    data={"cv_folds": "5", "csrf_token": token, "next": "/clean/"})
    assert r.status_code == 303 and started == [("score", {"version": "made-up", "cv_folds": 5})]
    r = client.post("/clean/rescore", data={"cv_folds": "1", "csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.status_code == 400 and "Folds must be 0" in r.get_json()["error"]

    def refuse(*a):
        raise jobs.JobRefused("A train job (#3) is running; wait for it to finish or cancel it.", 3)

    monkeypatch.setattr(jobs, "start", refuse)
    r = client.post("/clean/rescore", data={"csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.status_code == 400 and "train job (#3) is running" in r.get_json()["error"]


def test_a_report_can_ask_for_another_versions_lists_but_only_a_registered_one(
        app, admin, client, scored):
    from tests.cleaning_data import fake_scores
    from webapp.model import registry

    ids, labels, p_red = scored
    data_dir = app.config["DATA_DIR"]
    fake_scores(data_dir, ids, ["blue", "red"], [[0.5, 0.5]] * 9 + [[0.001, 0.999]],
                version="older")
    (registry.models_dir(data_dir) / "older" / registry.EXPORT).write_bytes(b"a stand-in")
    registry.record_version(data_dir, registry.models_dir(data_dir) / "older", {}, "test")
    (registry.models_dir(data_dir) / "ACTIVE").write_text("made-up\n")

    older = client.get("/clean/top-losses.json?version=older&limit=1").get_json()
    assert older["version"] == "older"
    assert older["items"][0]["image_id"] == ids[9]  # blue, p(red) .999
    page = client.get("/clean/?version=older").get_data(as_text=True)
    assert "not the active model" in page
    assert client.get("/clean/top-losses.json").get_json()["version"] == "made-up"
    for bad in ("../..", "nope"):
        r = client.get(f"/clean/top-losses.json?version={bad}")
        assert r.status_code == 404 and "no model version" in r.get_json()["error"]


def test_a_label_issue_card_says_which_model_gives_which_number(app, admin, client, scored):
    ds = Dataset(app.config["DATA_DIR"])
    train = [r["id"] for r in ds.labeled() if not r["is_valid"]]
    ds.close()
    fake_cv_scores(app.config["DATA_DIR"], train, ["blue", "red"], [[0.8, 0.2]] * len(train),
                   folds=3)  # a 3-fold thorough check that covered every training image
    page = client.get("/clean/label-issues").get_data(as_text=True)
    assert page.count("Model predicts") == page.count('class="clean-card"')
    assert "K-fold retraining (3 folds) suggests" in page  # the number that ranks, named
    assert "The model itself (a validation image) suggests" in page
    assert f"judges every training image ({len(train)})" in page
    assert "Choose the folds" not in page  # nothing is left for another rescore to cover
    items = client.get("/clean/label-issues.json?limit=100").get_json()["items"]
    assert {i["judged_by"] for i in items} == {"k-fold retraining (3 folds)",
                                               "the model itself (a validation image)"}
