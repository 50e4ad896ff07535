"""The cleaner's map: the scoring job projects the embeddings to 2D, and an admin reads every
image's place, label and marks from /clean/map.json and the Map tab."""
import csv
import json

import numpy as np
import pytest

from tests.cleaning_data import VERSION, add_pictures, fake_scores
from webapp.cleaning import projection, scoring
from webapp.dataset.store import Dataset
from webapp.model import registry

VOCAB = ["blue", "green", "red"]


def clusters(labels, dim=32, seed=0, spread=1.0):
    """Return embeddings with one cluster per class index in `labels`."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(labels) + 1, dim)) * 2
    return centres[labels] + rng.normal(size=(len(labels), dim)) * spread


def nearest_neighbour_agreement(xy, labels):
    """Return the share of points whose nearest other point on the map has the same label."""
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((labels[d.argmin(1)] == labels).mean())


@pytest.mark.parametrize("fit_limit", [1000, 60])
def test_the_map_keeps_each_class_together_also_when_only_a_sample_is_fitted(monkeypatch,
                                                                              fit_limit):
    monkeypatch.setattr(projection, "FIT_LIMIT", fit_limit)
    labels = np.repeat(np.arange(3), 70)
    drawn = projection.project(clusters(labels).astype(np.float16))
    assert drawn.xy.shape == (210, 2) and drawn.xy.dtype == np.float32
    assert drawn.xy.min() >= 0 and drawn.xy.max() <= 1 and np.isclose(drawn.xy.max(), 1)
    assert drawn.fitted == min(fit_limit, 210) and drawn.method.startswith("t-SNE")
    assert nearest_neighbour_agreement(drawn.xy, labels) > 0.95


@pytest.mark.parametrize("n", [0, 1, 2, 4])
def test_a_handful_of_images_still_gets_a_map(n):
    drawn = projection.project(np.ones((n, 8)) * np.arange(n)[:, None])
    assert drawn.xy.shape == (n, 2) and ((drawn.xy >= 0) & (drawn.xy <= 1)).all()


def test_scoring_draws_the_map_of_every_scored_image_and_stores_it_with_the_version(
        trained_copy):
    data_dir, version, _ = trained_copy
    meta = scoring.score_version(data_dir, version, batch_size=16)
    stored_meta, arrays = scoring.load_projection(data_dir, version)
    scores = scoring.load_scores(data_dir, version, embeddings=False)
    assert arrays["image_ids"].tolist() == scores.image_ids.tolist()
    assert arrays["xy"].shape == (meta["images"], 2)
    assert stored_meta["images"] == meta["images"] and stored_meta["method"].startswith("t-SNE")
    assert json.loads((registry.models_dir(data_dir) / version / "projection.json").read_text())


@pytest.fixture
def mapped(app):
    """Thirty images in three clusters, one far from everything and one near-copy, scored with
    the embedding checks and the map as scoring stores them."""
    ds = Dataset(app.config["DATA_DIR"])
    labels = [VOCAB[i % 3] for i in range(30)]
    ids = add_pictures(ds, labels, seed=4)
    x = clusters([i % 3 for i in range(30)], seed=2)
    x[9] = -x.mean(0) * 4  # unlike any other image
    x[13] = x[10] + 0.001  # a near-copy of image 10
    fake_scores(ds.data_dir, ids, VOCAB, np.eye(3)[[i % 3 for i in range(30)]] * 0.9 + 0.03,
                embeddings=x)
    vdir = registry.models_dir(ds.data_dir) / VERSION
    scoring.save_embedding_checks(vdir, np.asarray(ids), labels, VOCAB, x)
    scoring.save_projection(vdir, np.asarray(ids), x)
    ds.close()
    return ids, labels


def cleaned_csv(app):
    with open(f"{app.config['DATA_DIR']}/cleaned.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_map_json_gives_every_image_its_place_label_split_and_marks(app, admin, client, mapped):
    ids, labels = mapped
    got = client.get("/clean/map.json").get_json()
    assert got["version"] == VERSION and got["total"] == 30 and got["unplaced"] == 0
    assert got["method"].startswith("t-SNE") and set(got["marks"]) == {
        "label_issue", "outlier", "duplicate"}
    points = got["points"]
    assert points["image_id"] == sorted(ids)
    manifest = cleaned_csv(app)
    for name, label, split in zip(points["name"], points["label"], points["split"], strict=True):
        assert manifest[name]["label"] == label
        assert split == ("valid" if manifest[name]["is_valid"] == "True" else "train")
    assert all(0 <= v <= 1 for v in points["x"] + points["y"])
    flagged = {mark: {i for i, f in zip(points["image_id"], points[mark], strict=True) if f}
               for mark in got["marks"]}
    assert flagged["duplicate"] == {ids[10], ids[13]}
    assert ids[9] in flagged["outlier"]


def test_map_marks_follow_decisions_labels_and_deletes(app, admin, client, mapped):
    ids, _ = mapped
    token = admin.csrf_token()
    client.post("/clean/decide", data={"action": "keep", "image_id": ids[10],
                                       "other_id": ids[13], "csrf_token": token})
    client.post("/clean/decide", data={"action": "relabel", "image_id": [ids[0], ids[1]],
                                       "label": "red", "csrf_token": token})
    client.post("/clean/decide", data={"action": "delete", "image_id": ids[9],
                                       "csrf_token": token})
    points = client.get("/clean/map.json").get_json()["points"]
    row = {i: n for n, i in enumerate(points["image_id"])}
    assert ids[9] not in row and len(row) == 29
    assert points["label"][row[ids[0]]] == points["label"][row[ids[1]]] == "red"
    assert not points["duplicate"][row[ids[10]]]  # kept as distinct: no longer marked
    r = client.post("/clean/undo-last", data={"csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.status_code == 200 and "Undone" in r.get_json()["message"]
    assert ids[9] in client.get("/clean/map.json").get_json()["points"]["image_id"]


def test_images_added_since_scoring_are_counted_as_not_on_the_map(app, admin, client, mapped):
    ds = Dataset(app.config["DATA_DIR"])
    add_pictures(ds, ["red"], seed=99)
    ds.close()
    got = client.get("/clean/map.json").get_json()
    assert got["total"] == 30 and got["unplaced"] == 1


def test_the_map_tab_draws_from_the_json_and_says_how_it_was_made(admin, client, mapped):
    page = client.get("/clean/map").get_data(as_text=True)
    assert 'aria-current="page">Map' in page and 'id="map-canvas"' in page
    assert 'data-points-url="/clean/map.json"' in page and "clean_map.js" in page
    assert "t-SNE (scikit-learn, Barnes-Hut)" in page
    assert 'action="/clean/decide"' in page and 'name="csrf_token"' in page


def test_a_version_scored_before_maps_says_rescore_instead_of_an_empty_map(admin, client,
                                                                           dataset):
    ids = add_pictures(dataset, ["a", "b"] * 3)
    fake_scores(dataset.data_dir, ids, ["a", "b"], [[0.5, 0.5]] * 6)
    page = client.get("/clean/map").get_data(as_text=True)
    assert "was scored before the cleaner drew maps" in page and "Rescore" in page
    assert 'id="map-canvas"' not in page
    r = client.get("/clean/map.json")
    assert r.status_code == 409 and "rescore" in r.get_json()["error"]


def test_without_a_model_the_map_says_train_one_first(admin, client):
    page = client.get("/clean/map").get_data(as_text=True)
    assert "There is no active model yet" in page and 'id="map-canvas"' not in page
    r = client.get("/clean/map.json")
    assert r.status_code == 409 and "no active model" in r.get_json()["error"]


def test_strangers_cannot_read_the_map(client, mapped):
    assert client.get("/clean/map").status_code == 302
    assert client.get("/clean/map.json").status_code == 401
