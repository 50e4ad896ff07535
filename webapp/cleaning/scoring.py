"""Scores for the cleaner: every labeled image's class probabilities and embedding, per version.

A version's scores live beside its export.pkl: `models/<version>/scores.npz` (image ids, class
probabilities as float32, penultimate activations as float16, 64-bit perceptual hashes) and
`scores.json` (vocab, counts, timing). Losses are not stored: the cleaner computes them from the
probabilities and each image's current label, so a relabel re-ranks at once. Right after
scoring, the cheap models of embedding_models.py run on the embeddings (`embedding_cv.npz`:
out-of-fold probabilities and outlier scores), the near-duplicate search stores its pairs
(`pairs.npz`, by perceptual hashes) and projection.py draws the 2D map of the embeddings
(`projection.npz`: every image's x, y).
"""
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from webapp.cleaning import embedding_models, near_duplicates, projection
from webapp.core import files, images
from webapp.dataset.store import Dataset
from webapp.model import registry
from webapp.model.classifier import Classifier

SCORES = "scores.npz"
SCORES_META = "scores.json"
CV_SCORES = "cv_scores.npz"  # out-of-fold probabilities of training images (crossval.py)
CV_META = "cv_scores.json"
PAIRS = "pairs.npz"  # near-duplicate pairs at or above PAIRS_FLOOR, found right after scoring
PAIRS_META = "pairs.json"
PAIRS_FLOOR = 0.8  # of hashes: at most 12 of 64 bits differ
EMBEDDING_CV = "embedding_cv.npz"  # out-of-fold probabilities and outlier scores (embedding_models)
EMBEDDING_CV_META = "embedding_cv.json"
PROJECTION = "projection.npz"  # every image's place on the cleaner's map (projection.py)
PROJECTION_META = "projection.json"


class ScoringError(RuntimeError):
    """Scoring cannot run; the message says why."""


@dataclass
class Scores:
    """One version's stored scores: row i describes image `image_ids[i]`."""

    version: str
    vocab: list
    image_ids: np.ndarray  # (n,) int64
    probs: np.ndarray  # (n, classes) float32
    embeddings: np.ndarray | None = None  # (n, d) float16
    meta: dict = field(default_factory=dict)
    hashes: np.ndarray | None = None  # (n,) uint64 perceptual hashes; None if scored before them

    def __len__(self):
        return len(self.image_ids)

    def index(self):
        """Return {image_id: row}."""
        return {int(i): n for n, i in enumerate(self.image_ids)}


def labeled_images(data_dir):
    """Return the live labeled images (id, path, label, is_valid), oldest first."""
    dataset = Dataset(data_dir)
    try:
        return [dict(r) for r in dataset.labeled()]
    finally:
        dataset.close()


def load_pictures(data_dir, rows):
    """Decode the rows' files; return (pictures, rows that decoded, ids that failed)."""
    pics, ok, failed = [], [], []
    for r in rows:
        try:
            pics.append(images.decode((Path(data_dir) / r["path"]).read_bytes()))
            ok.append(r)
        except (OSError, images.ImageRejected):
            failed.append(r["id"])
    return pics, ok, failed


def score_images(clf, data_dir, rows, progress=None, batch_size=64):
    """Score rows in batches; return (ids, probs, embeddings, perceptual hashes, failed ids)."""
    ids, probs, embs, hashes, failed = [], [], [], [], []
    total = len(rows)
    if progress:
        progress(0, total)
    for start in range(0, total, batch_size):
        pics, ok, bad = load_pictures(data_dir, rows[start:start + batch_size])
        failed += bad
        if pics:
            p, e = clf.scores(pics)
            ids += [r["id"] for r in ok]
            probs.append(p)
            embs.append(e.astype(np.float16))
            hashes += [near_duplicates.perceptual_hash(pic) for pic in pics]
        if progress:
            progress(min(start + batch_size, total), total)
    n_classes = len(clf.vocab)
    return (np.asarray(ids, dtype=np.int64),
            np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32),
            np.concatenate(embs) if embs else np.zeros((0, 0), np.float16),
            np.asarray(hashes, np.uint64), failed)


def save_arrays(path, meta_path, meta, **arrays):
    """Write an .npz and its JSON atomically (the JSON last: it says the scores are complete)."""
    with files.atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    with files.atomic_write(meta_path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)


def score_version(data_dir, version, on_progress=None, batch_size=64, on_phase=None):
    """Score every labeled live image with a version's learner and store the scores with it.

    `on_progress(done, total)` is called after each batch (it may raise to stop: nothing is
    written then); `on_phase(message)` hears of each step after the scoring (the pair search,
    the cross-validated models, the map), which take seconds to a minute or two on large sets.
    Return the summary that scores.json records.
    """
    on_phase = on_phase or (lambda message: None)
    started = time.monotonic()
    clf = Classifier(registry.load_learner_verified(data_dir, version), version)
    rows = labeled_images(data_dir)
    ids, probs, embs, hashes, failed = score_images(clf, data_dir, rows, on_progress, batch_size)
    seconds = time.monotonic() - started
    meta = {"version": version, "vocab": clf.vocab, "images": int(len(ids)),
            "failed": failed, "embedding_dim": int(embs.shape[1]) if embs.size else 0,
            "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(seconds, 2),
            "images_per_second": round(len(ids) / seconds, 1) if seconds > 0 else None}
    vdir = registry.models_dir(data_dir) / version
    save_arrays(vdir / SCORES, vdir / SCORES_META, meta,
                image_ids=ids, probs=probs.astype(np.float32), embeddings=embs, hashes=hashes)
    on_phase(f"Looking for near-duplicates among {len(ids)} images")
    save_pairs(vdir, ids, embs, hashes)
    labels = {r["id"]: r["label"] for r in rows}
    on_phase("Judging every label with models cross-validated on the embeddings")
    save_embedding_checks(vdir, ids, [labels[int(i)] for i in ids], clf.vocab, embs)
    on_phase("Drawing the map of the dataset")
    save_projection(vdir, ids, embs)
    return meta


def save_pairs(version_dir, ids, embeddings, hashes=None):
    """Find the near-duplicate pairs above PAIRS_FLOOR once, so the page needs no search
    (by perceptual hashes; by embeddings when there are none)."""
    started = time.monotonic()
    method, pairs = near_duplicates.find_pairs(hashes, embeddings, PAIRS_FLOOR)
    first, second, sims = ids[pairs.first], ids[pairs.second], pairs.similarity
    meta = {"method": method, "floor": PAIRS_FLOOR, "pairs": int(len(first)),
            "images": int(len(ids)), "seconds": round(time.monotonic() - started, 2)}
    save_arrays(version_dir / PAIRS, version_dir / PAIRS_META, meta,
                first=first, second=second, similarity=sims)


def save_embedding_checks(version_dir, ids, labels, vocab, embeddings):
    """Fit the cheap models on the embeddings once: every image's out-of-fold probabilities
    (under the labels it has now) and outlier score."""
    started = time.monotonic()
    index = {c: i for i, c in enumerate(vocab)}
    y = np.fromiter((index.get(lbl, -1) for lbl in labels), np.int64, len(labels))
    probs, covered, folds = embedding_models.out_of_fold_probs(embeddings, y, len(vocab))
    outlier = embedding_models.outlier_scores(embeddings, y, probs, covered)
    meta = {"vocab": list(vocab), "model": embedding_models.MODEL, "folds": folds,
            "images": int(len(ids)), "covered": int(covered.sum()),
            "neighbours": embedding_models.NEIGHBOURS,
            "seconds": round(time.monotonic() - started, 2)}
    save_arrays(version_dir / EMBEDDING_CV, version_dir / EMBEDDING_CV_META, meta,
                image_ids=ids, probs=probs, covered=covered, outlier=outlier)
    return meta


def save_projection(version_dir, ids, embeddings):
    """Draw the 2D map of the embeddings once, so the Map tab needs no scikit-learn."""
    started = time.monotonic()
    drawn = projection.project(embeddings)
    meta = {"method": drawn.method, "images": int(len(ids)), "fitted": drawn.fitted,
            "seconds": round(time.monotonic() - started, 2)}
    save_arrays(version_dir / PROJECTION, version_dir / PROJECTION_META, meta,
                image_ids=np.asarray(ids, np.int64), xy=drawn.xy)
    return meta


def load_arrays(data_dir, version, npz, meta_name, names):
    """Return (meta, {name: array}) stored with a version, or None when they are not there."""
    vdir = registry.models_dir(data_dir) / version
    try:
        meta = json.loads((vdir / meta_name).read_text())
        with np.load(vdir / npz) as z:  # a name the file lacks (older scores) is left out
            return meta, {n: z[n] for n in names if n in z.files}
    except FileNotFoundError:
        return None


def scores_meta(data_dir, version):
    """Return what scores.json says of a version's scores, or None before it was scored."""
    try:
        return json.loads((registry.models_dir(data_dir) / version / SCORES_META).read_text())
    except (FileNotFoundError, ValueError):
        return None


def load_scores(data_dir, version, embeddings=True):
    """Return a version's Scores, or None when it has not been scored."""
    names = ("image_ids", "probs", "hashes") + (("embeddings",) if embeddings else ())
    got = load_arrays(data_dir, version, SCORES, SCORES_META, names)
    if got is None:
        return None
    meta, a = got
    return Scores(version, meta["vocab"], a["image_ids"], a["probs"], a.get("embeddings"), meta,
                  a.get("hashes"))


def load_cv_scores(data_dir, version):
    """Return the out-of-fold Scores of a version's training images, or None."""
    got = load_arrays(data_dir, version, CV_SCORES, CV_META, ("image_ids", "probs"))
    return None if got is None else Scores(version, got[0]["vocab"], got[1]["image_ids"],
                                           got[1]["probs"], None, got[0])


def load_embedding_checks(data_dir, version):
    """Return (meta, {image_ids, probs, covered, outlier}) stored for a version, or None
    (versions scored before these checks existed: rescoring adds them)."""
    return load_arrays(data_dir, version, EMBEDDING_CV, EMBEDDING_CV_META,
                       ("image_ids", "probs", "covered", "outlier"))


def load_pairs(data_dir, version):
    """Return (first ids, second ids, similarities, meta) stored for a version, or None."""
    got = load_arrays(data_dir, version, PAIRS, PAIRS_META, ("first", "second", "similarity"))
    if got is None:
        return None
    meta, arrays = got
    return arrays["first"], arrays["second"], arrays["similarity"], meta


def load_projection(data_dir, version):
    """Return (meta, {image_ids, xy}) of a version's map, or None (versions scored before the
    map existed: rescoring draws it)."""
    return load_arrays(data_dir, version, PROJECTION, PROJECTION_META, ("image_ids", "xy"))
