"""Near-duplicates by perceptual hash: a re-encoded, cropped copy is listed, a look-alike is not."""
import random

import numpy as np
import pytest

from tests.cleaning_data import fake_scores
from tests.pictures import encode, near_copy, scene
from webapp.cleaning import lists as cleaning, near_duplicates
from webapp.core import images


@pytest.fixture
def scenes(dataset):
    """Eight photo-like pictures of one class ("street") and a re-encoded, cropped, shrunk copy
    of the first, scored as scoring does: hashes from the stored files, and embeddings like a
    trained classifier's, where every picture of a class sits close to every other."""
    rng = random.Random(3)
    pictures = [scene(rng) for _ in range(8)]
    ids = [dataset.add_image(encode(im, "PNG"), label="street", write_csv=False).image_id
           for im in pictures]
    copy = dataset.add_image(near_copy(pictures[0]), label="street").image_id
    ids.append(copy)
    rows = {r["id"]: r for r in dataset.labeled()}
    hashes = [near_duplicates.perceptual_hash(
        images.decode((dataset.data_dir / rows[i]["path"]).read_bytes())) for i in ids]
    embeddings = np.ones(16) + np.random.default_rng(0).normal(scale=0.02, size=(len(ids), 16))
    fake_scores(dataset.data_dir, ids, ["street"], [[1.0]] * len(ids), embeddings=embeddings,
                hashes=hashes)
    return ids, copy, embeddings


def listed(page):
    return {(p["first"]["image_id"], p["second"]["image_id"]) for p in page.items}


def test_a_reencoded_cropped_copy_is_listed_and_two_pictures_of_one_class_are_not(dataset,
                                                                                  scenes):
    ids, copy, embeddings = scenes
    cleaner = cleaning.Cleaner(dataset, "made-up")
    assert cleaner.pair_method == near_duplicates.HASH

    page = cleaner.duplicates()  # at the default threshold
    assert listed(page) == {(ids[0], copy)}
    assert page.items[0]["similarity"] >= near_duplicates.DEFAULT_THRESHOLD["phash"]

    # The embeddings alone put every two pictures of the class above the old 0.95.
    assert len(near_duplicates.similar_pairs(embeddings, 0.95)) == len(ids) * (len(ids) - 1) // 2


def test_the_list_defaults_to_the_calibrated_threshold_and_older_scores_keep_theirs(
        app, admin, client, dataset, scenes):
    assert near_duplicates.DEFAULT_THRESHOLD == {"phash": 0.875, "cosine": 0.95}
    got = client.get("/clean/duplicates.json").get_json()
    assert got["threshold"] == 0.875 and got["total"] == 1
    assert got["ranked_by"].startswith("perceptual-hash similarity")
    page = client.get("/clean/duplicates").get_data(as_text=True)
    assert 'value="0.875"' in page and "at most 8 of the 64 bits differ" in page

    # A version scored before hashes existed keeps pairing by embeddings, at their old default.
    ids = scenes[0]
    emb = np.random.default_rng(1).normal(size=(len(ids), 8))
    emb[2] = emb[1] + 0.01
    fake_scores(dataset.data_dir, ids, ["street"], [[1.0]] * len(ids), embeddings=emb)
    got = client.get("/clean/duplicates.json").get_json()
    assert got["threshold"] == 0.95 and got["ranked_by"] == "cosine similarity of the embeddings"
    assert [(p["first"]["image_id"], p["second"]["image_id"]) for p in got["items"]] == [
        (ids[1], ids[2])]
    assert "Rescore" in client.get("/clean/duplicates").get_data(as_text=True)


def test_the_tiled_hash_search_finds_exactly_the_close_hashes():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2)
    for a, b, flips in [(3, 250, 0b1), (40, 41, 0b10110), (100, 299, 0xFF), (7, 8, 0xFFF)]:
        h[b] = h[a] ^ np.uint64(flips)  # 1, 3, 8 and 12 bits differ
    found = near_duplicates.similar_hashes(h, 0.875, rows=64, cols=96)
    pairs = set(zip(found.first.tolist(), found.second.tolist(), strict=True))
    differ = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(differ <= 8, 1))
    assert pairs == set(zip(i.tolist(), j.tolist(), strict=True))
    assert {(3, 250), (40, 41), (100, 299)} <= pairs and (7, 8) not in pairs
    assert (np.diff(found.similarity) <= 0).all() and found.similarity[0] == 1 - 1 / 64
    assert len(near_duplicates.similar_hashes(h, 0.875, rows=64, cols=96, max_pairs=2)) == 2
