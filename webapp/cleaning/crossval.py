"""k-fold cross-validation of the training split: out-of-sample probabilities for every training image.

A model never sees its own validation images, so their probabilities already are out-of-sample.
The training images need k small models: each is trained, with the version's own recipe, on k-1
folds of the training split and predicts the fold it did not see. That costs about k-1 times the
version's training run (each fold trains on (k-1)/k of the images, without lr_find).
"""
import time

import numpy as np

from webapp.model import registry
from webapp.cleaning import scoring

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


def recipe(metrics):
    """Return the version's training recipe as plain settings for a fold."""
    opts = metrics.get("options") or {}
    lr = metrics.get("lr") or 1e-3
    lo, hi = metrics.get("lr_unfrozen") or (lr / 100, lr / 5)
    arch = metrics.get("arch") or opts.get("arch", "resnet34")
    return {"arch": arch,
            "size": int(metrics.get("size") or opts.get("size", 224)),
            "epochs": int(opts.get("epochs", 4)),
            "fine_tune_epochs": int(opts.get("fine_tune_epochs", 2)),
            "bs": int(opts.get("bs", 64)), "seed": int(opts.get("seed", 42)),
            "lr": float(lr), "lr_unfrozen": (float(lo), float(hi)),
            # The folds start where the version started: from ImageNet weights if it did and they
            # are still in the local cache, else from scratch (no download inside a job).
            "pretrained": bool(metrics.get("pretrained")) and weights_cached(arch)}


def weights_cached(arch):
    """Tell whether torchvision's ImageNet weights for `arch` are in the local cache."""
    from webapp.model.training import weights_cached as cached

    try:
        return cached(arch)
    except Exception:  # an architecture torchvision does not name: no weights to find
        return False


def fit_fold(data_dir, train_rows, held_rows, r, on_batch=None):
    """Train one fold's model with the recipe `r`; return its learner."""
    import pandas as pd
    import torchvision.models as tvm
    from fastai.callback.core import Callback
    from fastai.torch_core import set_seed
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, vision_learner

    df = pd.DataFrame([{"name": x["path"], "label": x["label"], "is_valid": held}
                       for rows, held in ((train_rows, False), (held_rows, True)) for x in rows])
    set_seed(r["seed"], reproducible=True)
    dls = ImageDataLoaders.from_df(df, data_dir, valid_col="is_valid", item_tfms=Resize(r["size"]),
                                   batch_tfms=aug_transforms(), bs=min(r["bs"], len(train_rows)),
                                   seed=r["seed"], num_workers=0, device="cpu")
    learn = vision_learner(dls, getattr(tvm, r["arch"]), pretrained=r["pretrained"])

    class Report(Callback):
        def after_batch(self):
            if on_batch and self.training:
                on_batch(self.iter + 1, self.n_iter)

    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
    learn.add_cb(Report())
    if r["pretrained"]:
        learn.freeze()
    if r["epochs"]:
        learn.fit_one_cycle(r["epochs"], r["lr"])
    learn.unfreeze()
    if r["fine_tune_epochs"]:
        learn.fit_one_cycle(r["fine_tune_epochs"], slice(*r["lr_unfrozen"]))
    return learn


def aligned(probs, vocab_from, vocab_to):
    """Reorder probability columns from one vocab to another (classes it lacks get 0)."""
    out = np.zeros((len(probs), len(vocab_to)), np.float32)
    for j, name in enumerate(vocab_to):
        if name in vocab_from:
            out[:, j] = probs[:, vocab_from.index(name)]
    return out


def cross_validate(data_dir, version, k, job=None, batch_size=64, epochs=None):
    """Train k fold models on the training split and store every training image's out-of-fold
    probabilities with the version (cv_scores.npz); return the summary.

    `epochs` replaces the recipe's epochs with that many in one cycle (cheaper, rougher folds).
    """
    from webapp.model.classifier import Classifier

    record = registry.version_record(data_dir, version)
    vocab = scoring.load_scores(data_dir, version, embeddings=False)
    vocab = vocab.vocab if vocab else None
    rows = [x for x in scoring.labeled_images(data_dir) if not x["is_valid"]]
    check_folds(k, rows)
    r = recipe(record["metrics"])
    if epochs:
        r.update(epochs=int(epochs), fine_tune_epochs=0)
    folds = assign_folds(rows, k, r["seed"])
    n_epochs = r["epochs"] + r["fine_tune_epochs"]
    started = time.monotonic()
    ids, probs = [], []
    for f in range(k):
        train = [x for x in rows if folds[x["id"]] != f]
        held = [x for x in rows if folds[x["id"]] == f]
        if job:
            job.progress(0, n_epochs, phase=f"cross-validation: fold {f + 1} of {k}",
                         message=f"Training fold {f + 1} of {k} on {len(train)} images")
        epoch = {"n": -1}

        def on_batch(i, n, epoch=epoch):
            if i == 1:
                epoch["n"] += 1
            if job:
                job.progress(epoch["n"] * n + i, n_epochs * n)

        learn = fit_fold(data_dir, train, held, r, on_batch)
        clf = Classifier(learn)
        vocab = vocab or clf.vocab
        for start in range(0, len(held), batch_size):
            pics, ok, _ = scoring.load_pictures(data_dir, held[start:start + batch_size])
            if pics:
                probs.append(aligned(clf.probabilities(pics), clf.vocab, vocab))
                ids += [x["id"] for x in ok]
    order = np.argsort(ids)
    meta = {"version": version, "vocab": vocab, "folds": k, "images": len(ids),
            "seconds": round(time.monotonic() - started, 1), "recipe": r,
            "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    vdir = registry.models_dir(data_dir) / version
    scoring.save_arrays(vdir / scoring.CV_SCORES, vdir / scoring.CV_META, meta,
                        image_ids=np.asarray(ids, np.int64)[order],
                        probs=np.concatenate(probs)[order] if probs else np.zeros((0, len(vocab))))
    return meta
