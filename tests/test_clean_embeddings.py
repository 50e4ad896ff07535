"""The cheap models on stored embeddings: out-of-fold probabilities for every labeled image, and
outlier scores, as lists, JSON and the Outliers tab."""
import csv

import numpy as np
import pytest

from tests.cleaning_data import add_pictures, fake_cv_scores, fake_scores
from webapp.cleaning import decisions, embedding_models, lists as cleaning, scoring
from webapp.dataset.store import Dataset
from webapp.model import registry

VOCAB = ["blue", "red"]


def clusters(labels, dim=32, spread=0.6, seed=0):
    """Return embeddings for class indices: one Gaussian cluster per class around its centre."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    centres = rng.normal(size=(labels.max() + 1, dim)) * 3
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), dim))


def test_out_of_fold_probabilities_rank_flipped_labels_first():
    truth = np.repeat(np.arange(3), 60)
    x = clusters(truth)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(truth), 15, replace=False)
    labels = truth.copy()
    labels[flipped] = (truth[flipped] + rng.integers(1, 3, len(flipped))) % 3
    probs, covered, folds = embedding_models.out_of_fold_probs(x, labels, 3)
    assert covered.all() and folds == embedding_models.FOLDS
    assert probs.shape == (180, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == truth).mean() > 0.95  # out of fold: the flipped label is not learnt
    quality, flagged = cleaning.rank_label_issues(labels, probs)
    first = np.lexsort((quality, ~flagged))[:len(flipped)]
    assert set(first.tolist()) == set(flipped.tolist())


def test_small_classes_take_fewer_folds_and_a_lone_image_is_not_judged():
    labels = np.repeat(np.arange(3), 3)
    x = clusters(labels, seed=2)
    x = np.vstack([x, np.ones((1, x.shape[1]))])
    labels = np.append(labels, [3])  # a class with a single image: nothing to learn it from
    unknown = np.append(labels[:-1], [-1])  # ...or a class the model's vocab lacks
    for y in (labels, unknown):
        probs, covered, folds = embedding_models.out_of_fold_probs(x, y, 4)
        assert folds == 3 and covered[:-1].all() and not covered[-1]
        assert (probs[-1] == 0).all() and (probs[:-1, 3] == 0).all()
    _, covered, folds = embedding_models.out_of_fold_probs(x[:3], labels[:3], 3)
    assert folds == 0 and not covered.any()  # one class only: nothing to tell apart


def test_pictures_no_class_claims_get_the_top_outlier_scores():
    labels = np.repeat(np.arange(3), 80)
    rng = np.random.default_rng(4)
    x = np.vstack([clusters(labels, seed=3), rng.normal(size=(6, 32)) * 3])  # six of another kind
    y = np.append(labels, rng.integers(0, 3, 6))  # ...in the class folders
    probs, covered, _ = embedding_models.out_of_fold_probs(x, y, 3)
    scores = embedding_models.outlier_scores(x, y, probs, covered)
    assert scores.shape == (246,) and ((scores >= 0) & (scores <= 1)).all()
    assert set(np.argsort(-scores)[:6].tolist()) == set(range(240, 246))


def test_images_the_cross_validation_cannot_judge_are_scored_by_their_neighbours():
    labels = np.repeat(np.arange(2), 40)
    x = np.vstack([clusters(labels, seed=5), -np.ones((1, 32))])  # a lone class, far away
    y = np.append(labels, [2])
    probs, covered, _ = embedding_models.out_of_fold_probs(x, y, 3)
    assert not covered[-1]
    scores = embedding_models.outlier_scores(x, y, probs, covered)
    assert scores[80] == scores.max() == 1  # the farthest by its neighbours
    assert embedding_models.outlier_scores(x[:2], y[:2], probs[:2], covered[:2]).tolist() == [0, 0]


@pytest.fixture
def judged(dataset):
    """Forty images in two clusters, five labels flipped, two far-away pictures, scored with the
    embedding models as scoring does (a made-up network that finds every image easy)."""
    truth = ["blue", "red"] * 20
    ids = add_pictures(dataset, truth, seed=7)
    x = clusters([VOCAB.index(t) for t in truth], seed=5)
    flipped, far = [ids[i] for i in (1, 6, 13, 22, 35)], [ids[4], ids[29]]
    x[[4, 29]] = np.random.default_rng(6).normal(size=(2, x.shape[1])) * 3
    for i in flipped:
        dataset.change("relabel", image_id=i, label="red" if truth[ids.index(i)] == "blue"
                       else "blue")
    labels = {r["id"]: r["label"] for r in dataset.labeled()}
    probs = [[0.9, 0.1] if labels[i] == "blue" else [0.1, 0.9] for i in ids]  # memorised
    fake_scores(dataset.data_dir, ids, VOCAB, probs, embeddings=x)
    vdir = registry.models_dir(dataset.data_dir) / "made-up"
    scoring.save_embedding_checks(vdir, np.asarray(ids), [labels[i] for i in ids], VOCAB, x)
    return dataset, ids, set(flipped), set(far)


def test_label_issues_judge_training_images_without_retraining_and_say_how(judged):
    ds, ids, flipped, far = judged
    c = cleaning.Cleaner(ds, "made-up")
    page = c.label_issues(limit=len(flipped) + len(far))
    assert page.total == len(ids)  # training images too, with no k-fold retraining
    assert {i["image_id"] for i in page.items} >= flipped  # the far ones may be unsure too
    assert {i["split"] for i in c.label_issues(limit=40).items} == {"train", "valid"}
    name = "cross-validated logistic regression on embeddings (5 folds)"
    assert page.sources == {name: len(ids)}
    assert c.coverage()["embedding"]["folds"] == 5

    train = [r["id"] for r in ds.labeled() if not r["is_valid"]][:10]
    fake_cv_scores(ds.data_dir, train, VOCAB, [[0.5, 0.5]] * 10, folds=3)
    page = cleaning.Cleaner(ds, "made-up").label_issues()
    assert page.sources == {"k-fold retraining (3 folds)": 10, name: len(ids) - 10}


def test_outliers_are_the_far_away_pictures_and_leave_when_decided(judged):
    ds, ids, _, far = judged
    page = cleaning.Cleaner(ds, "made-up").outliers(limit=3)  # the far two, and the image the
    assert page.total == len(ids) and far <= {i["image_id"] for i in page.items}  # LR doubts most
    assert [i["score"] for i in page.items] == sorted((i["score"] for i in page.items),
                                                      reverse=True)
    first, second = sorted(far)
    decisions.decide(ds, "delete", [first])
    decisions.decide(ds, "keep", [second])
    assert not far & {i["image_id"] for i in cleaning.Cleaner(ds, "made-up").outliers().items}


def test_versions_scored_before_the_embedding_models_say_so(dataset):
    ids = add_pictures(dataset, ["a", "b"] * 5)
    fake_scores(dataset.data_dir, ids, ["a", "b"], [[0.5, 0.5]] * 10)
    c = cleaning.Cleaner(dataset, "made-up")
    assert c.outliers() is None and c.coverage()["embedding"] is None
    valid = {r["id"] for r in dataset.labeled() if r["is_valid"]}
    page = c.label_issues(limit=10)
    assert {i["image_id"] for i in page.items} == valid
    assert page.sources == {"the model's own predictions (validation images)": len(valid)}


@pytest.fixture
def served(app):
    ds = Dataset(app.config["DATA_DIR"])
    labels = ["red", "blue"] * 15
    ids = add_pictures(ds, labels, seed=12)
    x = clusters([VOCAB.index(t) for t in labels], seed=8)
    x[7] = np.random.default_rng(9).normal(size=x.shape[1]) * 3
    fake_scores(ds.data_dir, ids, VOCAB, [[0.5, 0.5]] * len(ids), embeddings=x)
    scoring.save_embedding_checks(registry.models_dir(ds.data_dir) / "made-up", np.asarray(ids),
                                  labels, VOCAB, x)
    ds.close()
    return ids


def manifest(app):
    with open(f"{app.config['DATA_DIR']}/cleaned.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def test_outliers_json_lists_names_as_in_cleaned_csv_most_unusual_first(app, admin, client,
                                                                        served):
    every = client.get("/clean/outliers.json?limit=1000").get_json()
    assert every["total"] == 30 and "outlier score" in every["ranked_by"]
    assert every["items"][0]["image_id"] == served[7]
    scores = [i["score"] for i in every["items"]]
    assert scores == sorted(scores, reverse=True)
    rows = manifest(app)
    for item in every["items"]:
        assert rows[item["name"]]["label"] == item["label"]
        assert item["split"] == ("valid" if rows[item["name"]]["is_valid"] == "True" else "train")
    page = client.get("/clean/outliers.json?limit=5&offset=5").get_json()
    assert page["items"] == every["items"][5:10]
    for query, message in [("limit=0", "limit must be between"), ("offset=x", "whole number")]:
        r = client.get(f"/clean/outliers.json?{query}")
        assert r.status_code == 400 and message in r.get_json()["error"]


def test_outliers_json_without_outlier_scores_says_rescore(admin, client, dataset):
    ids = add_pictures(dataset, ["a", "b"] * 3)
    fake_scores(dataset.data_dir, ids, ["a", "b"], [[0.5, 0.5]] * 6)
    r = client.get("/clean/outliers.json")
    assert r.status_code == 409 and "rescore" in r.get_json()["error"]
    assert "Rescore to find the pictures" in client.get("/clean/outliers").get_data(as_text=True)


def test_label_issues_json_covers_training_images_and_names_its_source(admin, client, served):
    issues = client.get("/clean/label-issues.json?limit=1000").get_json()
    assert issues["total"] == 30 and {i["split"] for i in issues["items"]} == {"train", "valid"}
    source = "cross-validated logistic regression on embeddings (5 folds)"
    assert issues["sources"] == [{"source": source, "images": 30}]
    assert issues["ranked_by"].startswith("label quality (self-confidence), lowest first")
    assert source in issues["ranked_by"]
    page = client.get("/clean/label-issues").get_data(as_text=True)
    assert f"{source}: 30 images" in page and "Every labeled image can be judged" in page


def test_the_outliers_tab_decides_and_undoes_like_the_others(app, admin, client, served):
    page = client.get("/clean/outliers").get_data(as_text=True)
    assert 'aria-current="page">Outliers' in page and "30 images, most unusual first" in page
    assert page.index('data-image-id=') == page.index(f'data-image-id="{served[7]}"')
    token = admin.csrf_token()
    r = client.post("/clean/decide", data={"action": "delete", "image_id": served[7],
                                           "csrf_token": token, "next": "/clean/outliers"})
    assert r.status_code == 303 and r.location.endswith("/clean/outliers")
    assert f'data-image-id="{served[7]}"' not in client.get("/clean/outliers").get_data(
        as_text=True)
    r = client.post("/clean/undo-last", data={"csrf_token": token},
                    headers={"Accept": "application/json"})
    assert r.get_json()["message"].startswith(f"Undone: deleted image #{served[7]}")
    first = client.get("/clean/outliers.json?limit=1").get_json()["items"][0]
    assert first["image_id"] == served[7]
