"""The shared learner's predictions equal learn.predict's, for any size and mode of image."""
import random

import numpy as np
import pytest

from tests.pictures import encode, tinted
from webapp.core import images
from webapp.model import registry
from webapp.model.classifier import Classifier


@pytest.fixture(scope="module")
def served(trained_dir):
    data_dir, version, _ = trained_dir
    _, learn = registry.load_active(data_dir)
    return learn, Classifier(learn, version)


def varied_images(n=24):
    """Pictures of several sizes and modes, decoded the way intake and serving decode them."""
    rng = random.Random(11)
    out = []
    for i in range(n):
        w, h = rng.choice([(32, 32), (50, 20), (20, 64), (120, 90), (7, 9)])
        im = tinted(rng.choice(["red", "blue"]), rng, 32).resize((w, h))
        mode = ["RGB", "L", "P", "RGBA", "CMYK"][i % 5]
        fmt = "JPEG" if mode in ("RGB", "L", "CMYK") else "PNG"
        out.append(images.decode(encode(im.convert(mode), fmt)))
    return out


def test_probabilities_match_learn_predict(served):
    learn, clf = served
    pics = varied_images()
    batch = clf.predict_batch(pics)
    for pic, pred in zip(pics, batch, strict=True):
        label, _, probs = learn.predict(pic)
        ours = dict(pred.ranked)
        assert pred.label == label
        assert max(abs(ours[c] - float(p)) for c, p in zip(clf.vocab, probs, strict=True)) < 1e-5
    # learn.predict's DataLoader passes leave our transforms on the validation split.
    assert np.array_equal(clf.probabilities(pics), clf.probabilities(pics))
    assert [p.ranked for p in clf.predict_batch(pics)] == [p.ranked for p in batch]


def test_predict_is_sorted_and_sums_to_one(served):
    _, clf = served
    ranked = clf.predict(varied_images(1)[0])
    probs = [p for _, p in ranked]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
    assert {label for label, _ in ranked} == {"blue", "red"}


def test_embeddings_are_the_penultimate_activations(served):
    learn, clf = served
    pics = varied_images(4)
    emb = clf.embed(pics)
    last = learn.model[1][-1]
    assert emb.shape == (4, last.in_features)
    logits = emb @ last.weight.detach().numpy().T
    if last.bias is not None:
        logits += last.bias.detach().numpy()
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.allclose(probs, clf.probabilities(pics), atol=1e-5)
