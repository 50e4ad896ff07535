"""Datasets with made-up scores for the cleaner's tests: the lists without a model or training."""
import io
import random

import numpy as np
from PIL import Image

from webapp.cleaning import scoring
from webapp.model import registry

VERSION = "made-up"


def picture(rng, size=16):
    """Return the PNG bytes of a small random picture (unique with overwhelming odds)."""
    noise = bytes(rng.randrange(256) for _ in range(size * size * 3))
    im = Image.frombytes("RGB", (size, size), noise)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def add_pictures(ds, labels, seed=0):
    """Add one random picture per label; return their image ids in order."""
    rng = random.Random(seed)
    ids = [ds.add_image(picture(rng), label=label, source="test", write_csv=False).image_id
           for label in labels]
    ds.write_cleaned_csv()
    return ids


def fake_scores(data_dir, ids, vocab, probs, embeddings=None, version=VERSION, hashes=None):
    """Store scores for `ids` as scoring does, and make `version` the active one.

    Without `hashes` (perceptual hashes) the scores are those of a version scored before
    hashes existed: its near-duplicates come from the embeddings."""
    vdir = registry.models_dir(data_dir) / version
    vdir.mkdir(parents=True, exist_ok=True)
    order = np.argsort(ids)
    ids = np.asarray(ids, np.int64)[order]
    probs = np.asarray(probs, np.float32)[order]
    embs = (np.asarray(embeddings, np.float16)[order] if embeddings is not None
            else np.zeros((len(ids), 4), np.float16))
    meta = {"version": version, "vocab": list(vocab), "images": len(ids), "failed": [],
            "embedding_dim": embs.shape[1], "scored_at": "2026-01-01T00:00:00Z", "seconds": 1.0,
            "images_per_second": float(len(ids))}
    hashed = {} if hashes is None else {"hashes": np.asarray(hashes, np.uint64)[order]}
    scoring.save_arrays(vdir / scoring.SCORES, vdir / scoring.SCORES_META, meta,
                        image_ids=ids, probs=probs, embeddings=embs, **hashed)
    scoring.save_pairs(vdir, ids, embs, hashed.get("hashes"))
    (registry.models_dir(data_dir) / "ACTIVE").write_text(version + "\n")
    return version


def fake_cv_scores(data_dir, ids, vocab, probs, version=VERSION, folds=5):
    """Store out-of-fold probabilities for training images as crossval does."""
    vdir = registry.models_dir(data_dir) / version
    order = np.argsort(ids)
    meta = {"version": version, "vocab": list(vocab), "folds": folds, "images": len(ids),
            "seconds": 12.0, "scored_at": "2026-01-01T00:00:00Z"}
    scoring.save_arrays(vdir / scoring.CV_SCORES, vdir / scoring.CV_META, meta,
                        image_ids=np.asarray(ids, np.int64)[order],
                        probs=np.asarray(probs, np.float32)[order])


def two_class_probs(p_first):
    """Return [[p, 1-p], ...] for two classes."""
    return [[p, 1 - p] for p in p_first]
