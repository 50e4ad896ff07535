"""k-fold cross-validation: out-of-sample probabilities for every image of the training split.

A model never sees its own validation images, so their probabilities already are out-of-sample.
The training images need k small models: each is trained, with the version's own recipe, on k-1
folds of the training split and predicts the fold it did not see. That costs about k-1 times the
version's training run (each fold trains on (k-1)/k of the images, without lr_find).
"""
import time
from dataclasses import asdict, replace

import numpy as np

from webapp.cleaning import scoring
from webapp.model import recipe, registry, training
from webapp.model.classifier import Classifier

MIN_FOLDS, MAX_FOLDS = 2, 10


class CrossValidationRefused(ValueError):
    """Cross-validation cannot run on this dataset; the message says why."""


def assign_folds(rows, k, seed=42):
    """Return {image_id: fold}: each class spread evenly over the folds, the same every run."""
    rng = np.random.default_rng(seed)
    folds, by_label = {}, {}
    for r in sorted(rows, key=lambda r: r["id"]):
        by_label.setdefault(r["label"], []).append(r["id"])
    for label in sorted(by_label):
        ids = by_label[label]
        for n, i in enumerate(rng.permutation(len(ids))):
            folds[ids[i]] = n % k
    return folds


def estimate_seconds(metrics, k):
    """Return the expected cost of k folds in seconds from the version's training time, or None."""
    seconds = (metrics or {}).get("seconds")
    return round(seconds * (k - 1)) if seconds else None


def check_folds(k, rows):
    """Refuse a fold count that cannot work on these training rows."""
    if not MIN_FOLDS <= k <= MAX_FOLDS:
        raise CrossValidationRefused(f"choose between {MIN_FOLDS} and {MAX_FOLDS} folds")
    counts = {}
    for r in rows:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    small = sorted(c for c, n in counts.items() if n < 2)
    if small:
        raise CrossValidationRefused(
            f"these classes have fewer than 2 training images, so a fold would not know them: "
            f"{', '.join(small)}")


def fold_options(metrics, epochs=None):
    """Return the options every fold trains with: the version's own, its learning rates fixed.

    `epochs` replaces the recipe's epochs with that many in one cycle (cheaper, rougher folds).
    """
    opts = recipe.TrainOptions.from_version(metrics)
    # The folds start where the version started: from ImageNet weights if it did and they are
    # still in the local cache, else from scratch (no download inside a job).
    opts = replace(opts, pretrained=opts.pretrained and weights_cached(opts.arch))
    if epochs:
        opts = replace(opts, epochs=int(epochs), fine_tune_epochs=0)
    return opts


def weights_cached(arch):
    """Tell whether torchvision's ImageNet weights for `arch` are in the local cache."""
    try:
        return training.weights_cached(arch)
    except Exception:  # an architecture torchvision does not name: no weights to find
        return False


def fit_fold(data_dir, train_rows, held_rows, opts, on_progress=None, should_stop=None):
    """Fit one fold's learner with the recipe: trained on `train_rows`, validated on `held_rows`.

    `on_progress` and `should_stop` are the recipe's (see recipe.fit_recipe).
    """
    table = [{"name": x["path"], "label": x["label"], "is_valid": held}
             for rows, held in ((train_rows, False), (held_rows, True)) for x in rows]
    learn = recipe.build_learner(data_dir, opts, opts.pretrained, rows=table)
    recipe.fit_recipe(learn, opts, opts.pretrained, on_progress, should_stop)
    return learn


def _batch_progress(on_progress, opts):
    """Turn the recipe's per-batch calls into one fold's done and total batches."""
    if on_progress is None:
        return None
    n_epochs = opts.epochs + opts.fine_tune_epochs

    def per_batch(phase, epoch, batch, n_batches, **_):
        before = opts.epochs if phase == "unfrozen" else 0
        on_progress(done=(before + epoch) * n_batches + batch, total=n_epochs * n_batches)

    return per_batch


def aligned(probs, vocab_from, vocab_to):
    """Reorder probability columns from one vocab to another (classes it lacks get 0)."""
    out = np.zeros((len(probs), len(vocab_to)), np.float32)
    for j, name in enumerate(vocab_to):
        if name in vocab_from:
            out[:, j] = probs[:, vocab_from.index(name)]
    return out


def cross_validate(data_dir, version, k, on_progress=None, should_stop=None, batch_size=64,
                   epochs=None):
    """Train k fold models on the training split and store every training image's out-of-fold
    probabilities with the version (cv_scores.npz); return the summary.

    `on_progress(done=, total=, phase=, message=, detail=)` hears of each fold and batch (it may
    raise to stop); when `should_stop()` turns true, between folds or within one, it stops with
    TrainingCancelled and stores nothing. `epochs` replaces the recipe's epochs with that many
    in one cycle (cheaper, rougher folds).
    """
    record = registry.version_record(data_dir, version)
    vocab = scoring.load_scores(data_dir, version, embeddings=False)
    vocab = vocab.vocab if vocab else None
    rows = [x for x in scoring.labeled_images(data_dir) if not x["is_valid"]]
    check_folds(k, rows)
    opts = fold_options(record["metrics"], epochs)
    folds = assign_folds(rows, k, opts.seed)
    started = time.monotonic()
    ids, probs = [], []
    for f in range(k):
        recipe.stop_if_asked(should_stop)
        train = [x for x in rows if folds[x["id"]] != f]
        held = [x for x in rows if folds[x["id"]] == f]
        if on_progress:
            on_progress(done=0, total=opts.epochs + opts.fine_tune_epochs,
                        phase=f"cross-validation: fold {f + 1} of {k}",
                        message=f"Training fold {f + 1} of {k} on {len(train)} images")
        clf = Classifier(fit_fold(data_dir, train, held, opts,
                                  _batch_progress(on_progress, opts), should_stop))
        vocab = vocab or clf.vocab
        for start in range(0, len(held), batch_size):
            pics, ok, _ = scoring.load_pictures(data_dir, held[start:start + batch_size])
            if pics:
                probs.append(aligned(clf.probabilities(pics), clf.vocab, vocab))
                ids += [x["id"] for x in ok]
    recipe.stop_if_asked(should_stop)  # asked while the last fold scored: keep nothing
    order = np.argsort(ids)
    meta = {"version": version, "vocab": vocab, "folds": k, "images": len(ids),
            "seconds": round(time.monotonic() - started, 1), "recipe": asdict(opts),
            "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    vdir = registry.models_dir(data_dir) / version
    scoring.save_arrays(vdir / scoring.CV_SCORES, vdir / scoring.CV_META, meta,
                        image_ids=np.asarray(ids, np.int64)[order],
                        probs=np.concatenate(probs)[order] if probs else np.zeros((0, len(vocab))))
    return meta
