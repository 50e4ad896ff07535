"""The cleaner's lists on made-up scores: top losses, near-duplicates, suspected label errors."""
import math

import numpy as np
import pytest

from tests.cleaning_data import add_pictures, fake_cv_scores, fake_scores, two_class_probs
from webapp.cleaning import decisions, lists as cleaning, near_duplicates


@pytest.fixture
def six(dataset):
    """Six images, three 'a' and three 'b', scored by a made-up model."""
    ids = add_pictures(dataset, ["a", "a", "a", "b", "b", "b"])
    p_a = [0.9, 0.2, 0.6, 0.1, 0.95, 0.5]
    fake_scores(dataset.data_dir, ids, ["a", "b"], two_class_probs(p_a))
    return dataset, ids


def cleaner(ds):
    return cleaning.Cleaner(ds, "made-up")


def test_top_losses_rank_by_loss_under_the_current_label(six):
    ds, ids = six
    page = cleaner(ds).top_losses()
    # losses: -log p(label): b with p_b .05, a with .2, b .5, a .6, then a .9 and b .9
    assert [i["image_id"] for i in page.items] == [ids[4], ids[1], ids[5], ids[2], ids[0], ids[3]]
    top = page.items[0]
    assert top["label"] == "b" and top["predicted"] == "a" and top["confidence"] == 0.95
    assert top["loss"] == pytest.approx(-math.log(0.05), abs=1e-3) and top["score"] == top["loss"]
    assert top["name"] == ds.image(ids[4])["path"]


def test_a_relabel_reranks_at_once_and_deleted_or_kept_images_drop_out(six):
    ds, ids = six
    ds.change("relabel", image_id=ids[4], label="a")  # the model agreed with the fix: loss -log .95
    decisions.decide(ds, "delete", [ids[1]])
    decisions.decide(ds, "keep", [ids[5]])
    page = cleaner(ds).top_losses()
    order = [i["image_id"] for i in page.items]
    assert order == [ids[2], ids[0], ids[3], ids[4]]
    assert page.items[-1]["loss"] == pytest.approx(-math.log(0.95), abs=1e-3)
    assert ids[5] in [i["image_id"] for i in cleaner(ds).top_losses(include_kept=True).items]


def test_class_split_and_confusion_cell_filters(six):
    ds, ids = six
    c = cleaner(ds)
    assert {i["image_id"] for i in c.top_losses(label="a").items} == set(ids[:3])
    valid = {r["id"] for r in ds.labeled() if r["is_valid"]}
    assert {i["image_id"] for i in c.top_losses(split="valid").items} == valid
    assert {i["image_id"] for i in c.top_losses(split="train").items} == set(ids) - valid
    # The cell "labelled a, predicted b" holds exactly the one 'a' image the model calls b.
    cell = c.top_losses(actual="a", predicted="b").items
    assert [i["image_id"] for i in cell] == [ids[1]]
    assert [i["image_id"] for i in c.top_losses(actual="b", predicted="b").items] == [ids[3]]
    with pytest.raises(ValueError):
        c.top_losses(split="test")


def test_images_the_model_cannot_judge_come_last_and_pages_cover_everything_once(six):
    ds, ids = six
    ds.change("relabel", image_id=ids[0], label="c")  # a class the model has never seen
    c = cleaner(ds)
    full = c.top_losses()
    assert full.items[-1]["image_id"] == ids[0] and full.items[-1]["loss"] is None
    pages = [c.top_losses(offset=o, limit=4) for o in (0, 4)]
    assert [p.total for p in pages] == [6, 6] and pages[0].pages == 2 and pages[1].number == 2
    assert [i["image_id"] for p in pages for i in p.items] == [i["image_id"] for i in full.items]


def brute_force_pairs(x, threshold):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    i, j = np.nonzero(np.triu(sims, 1) >= threshold)
    return {(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True)}


def test_the_tiled_search_finds_exactly_the_pairs_of_the_full_matrix():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    for a, b in [(3, 250), (40, 41), (100, 299), (7, 8)]:  # near-copies across and within tiles
        x[b] = x[a] + rng.normal(scale=0.05, size=16)
    found = near_duplicates.similar_pairs(x, 0.9, rows=64, cols=96)
    pairs = set(zip(found.first.tolist(), found.second.tolist(), strict=True))
    assert pairs == brute_force_pairs(x, 0.9)
    assert {(3, 250), (40, 41), (100, 299), (7, 8)} <= pairs
    assert (np.diff(found.similarity) <= 0).all() and (found.similarity >= 0.9).all()
    assert (found.first < found.second).all()


def test_when_too_many_pairs_qualify_the_most_similar_are_kept():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    everything = near_duplicates.similar_pairs(x, 0.3, rows=32, cols=48)
    best = near_duplicates.similar_pairs(x, 0.3, rows=32, cols=48, max_pairs=25)
    assert len(everything) > 100 and len(best) == 25
    np.testing.assert_allclose(best.similarity, everything.similarity[:25], atol=1e-6)
    with pytest.raises(ValueError):
        near_duplicates.similar_pairs(x, 0)


def test_near_duplicates_flag_validation_leakage_and_different_labels(dataset):
    ids = add_pictures(dataset, ["a"] * 12 + ["b"] * 12, seed=3)
    rows = {r["id"]: r for r in dataset.labeled()}
    train = [i for i in ids if not rows[i]["is_valid"]]
    valid = [i for i in ids if rows[i]["is_valid"]]
    rng = np.random.default_rng(2)
    emb = {i: rng.normal(size=32) for i in ids}
    leak = (train[0], valid[0])  # the same picture on both sides of the split
    mixed = (train[1], next(i for i in train[2:] if rows[i]["label"] != rows[train[1]]["label"]))
    emb[leak[1]] = emb[leak[0]] + 0.01
    emb[mixed[1]] = emb[mixed[0]] + 0.05
    fake_scores(dataset.data_dir, ids, ["a", "b"], two_class_probs([0.5] * len(ids)),
                embeddings=[emb[i] for i in ids])

    page = cleaner(dataset).duplicates(0.95)
    pairs = {(p["first"]["image_id"], p["second"]["image_id"]): p for p in page.items}
    assert set(pairs) == {tuple(sorted(leak)), tuple(sorted(mixed))}
    assert pairs[tuple(sorted(leak))]["straddles_split"]
    assert pairs[tuple(sorted(leak))]["labels_differ"] == (
        rows[leak[0]]["label"] != rows[leak[1]]["label"])
    assert pairs[tuple(sorted(mixed))]["labels_differ"]
    assert not pairs[tuple(sorted(mixed))]["straddles_split"]
    assert page.items[0]["similarity"] >= page.items[1]["similarity"]

    decisions.decide(dataset, "delete", [leak[1]])  # delete one of the pair
    decisions.decide(dataset, "keep", [mixed[0]], other_id=mixed[1])  # keep both
    assert cleaner(dataset).duplicates(0.95).total == 0
    assert decisions.undo_last(dataset).startswith("Undone: keeping a near-duplicate pair")
    assert cleaner(dataset).duplicates(0.95).total == 1
    # Below the floor stored at scoring time, the search runs on the spot.
    assert cleaner(dataset).duplicates(0.5).total >= 1


def test_suspected_label_errors_rank_flipped_labels_first_on_out_of_sample_probabilities(dataset):
    labels = ["a", "b"] * 30
    ids = add_pictures(dataset, labels, seed=5)
    rng = np.random.default_rng(4)
    truth = list(labels)
    flipped = {ids[i] for i in (0, 7, 12, 33, 40, 51)}
    p_a = []
    for i, lbl in zip(ids, labels, strict=True):
        true = ("b" if lbl == "a" else "a") if i in flipped else lbl
        p = rng.uniform(0.8, 0.97)
        p_a.append(p if true == "a" else 1 - p)
    assert truth == labels
    fake_scores(dataset.data_dir, ids, ["a", "b"], two_class_probs(p_a))
    valid = {r["id"] for r in dataset.labeled() if r["is_valid"]}

    only_valid = cleaner(dataset).label_issues(limit=100)
    assert {i["image_id"] for i in only_valid.items} == valid  # training images need CV first

    train = [i for i in ids if i not in valid]
    fake_cv_scores(dataset.data_dir, train, ["a", "b"],
                   two_class_probs([p for i, p in zip(ids, p_a, strict=True) if i not in valid]))
    page = cleaner(dataset).label_issues(limit=len(flipped))
    assert page.total == len(ids)
    assert {i["image_id"] for i in page.items} == flipped
    first = page.items[0]
    assert first["flagged"] and first["suggested"] != first["label"]
    assert first["score"] == first["quality"]
    assert first["quality"] == pytest.approx(1 - first["suggested_probability"], abs=1e-3)

    decisions.decide(dataset, "relabel", [first["image_id"]], label=first["suggested"])  # accept
    again = cleaner(dataset).label_issues(limit=len(flipped))
    assert first["image_id"] not in {i["image_id"] for i in again.items}


def test_label_issues_are_ranked_within_their_split():
    # training images: their embeddings were fitted to their labels, so even out-of-fold
    # probabilities are confident, and a flipped one is doubted only a little; validation
    # images: ordinary doubt everywhere, and one flipped label the model is sure of
    train = [[0.97, 0.02, 0.01], [0.02, 0.97, 0.01], [0.01, 0.02, 0.97]] * 20 + [[0.35, 0.05, 0.6]]
    doubt = [[0.55, 0.225, 0.225], [0.225, 0.55, 0.225], [0.225, 0.225, 0.55]]
    valid = doubt * 20 + [[0.05, 0.9, 0.05]]
    probs = np.array(train + valid)
    labels = np.array(([0, 1, 2] * 20 + [0]) * 2)
    labels[60], labels[121] = 2, 0  # really a 0 and a 1
    groups = np.repeat([False, True], 61)

    together, _ = cleaning.rank_label_issues(labels, probs)
    assert 60 not in np.argsort(together, kind="stable")[:60]  # behind every validation image

    quality, rank, flagged = cleaning.rank_within_groups(labels, probs, groups)
    assert quality == pytest.approx(together)  # the score shown stays cleanlab's
    assert set(np.lexsort((quality, rank, ~flagged))[:2].tolist()) == {60, 121}
    assert rank[60] == rank[121] == pytest.approx(0.5 / 61)


def test_cleanlab_ranking_on_three_classes():
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9]] * 10
                     + [[0.05, 0.9, 0.05]])
    labels = np.array([0, 1, 2] * 10 + [2])  # the last one says 2; the model is sure it is 1
    quality, flagged = cleaning.rank_label_issues(labels, probs)
    assert quality.argmin() == 30 and flagged[30] and flagged.sum() == 1
    assert quality[30] == pytest.approx(0.05)
