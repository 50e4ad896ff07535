"""Cheap models on a version's stored embeddings: out-of-fold probabilities and outlier scores.

The network's penultimate activations (scores.npz) already place an image among its class's
images. Two checks reuse them without training the network again:

- A logistic regression on the L2-normalised embeddings, cross-validated in k stratified folds,
  predicts every labeled image from a model fitted on the other folds: out-of-sample
  probabilities for the training images too, in seconds rather than the k trainings of
  crossval.py (which stays the thorough option).
- An outlier score per image from two of cleanlab's OutOfDistribution scores, each turned into
  a percentile (the share of images that look more usual): one on those out-of-fold
  probabilities (no class's model claims the image), one on the embeddings themselves (mean
  cosine distance to the nearest images: nothing looks like it). The score is the higher of
  the two, so either kind of oddity is enough.

Why both: on bench/clean_embeddings.py (digits drawn at 64 px, resnet18 from scratch, 10%
labels flipped, 5% junk pictures in the class folders) the k-NN distances alone put only 35% of
the junk among the first 2000 of 3774 images, worse than chance, because junk pictures of one
kind sit close together and so have near neighbours; the probabilities alone put 99% there,
the higher of the two 100%. The probabilities alone miss what a linear model confidently puts
on one side of a boundary though it is far from every image (a case the tests build).
"""
import warnings

import numpy as np

FOLDS = 5
NEIGHBOURS = 10
MODEL = "logistic regression"
OUTLIER_METHOD = ("the higher percentile of cleanlab's OutOfDistribution on the "
                  "cross-validated probabilities and on the embeddings' nearest neighbours")
C = 10.0  # weak regularisation: unit-length embeddings give small logits under the default C=1


def normalised(embeddings):
    """Return the embeddings as float32 rows of unit length (zero rows stay zero)."""
    x = np.asarray(embeddings, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fold_count(labels, k=FOLDS):
    """Return the folds to use: k, fewer when the smallest class (of 2 or more) is smaller."""
    _, counts = np.unique(labels[labels >= 0], return_counts=True)
    counts = counts[counts >= 2]
    return int(min(k, counts.min())) if len(counts) >= 2 else 0


def out_of_fold_probs(embeddings, labels, n_classes, k=FOLDS, seed=0):
    """Return (probs (n, n_classes), covered (n,) bool, folds): out-of-fold class probabilities.

    `labels` holds class indices (-1: a class outside the vocab). A covered row's probabilities
    come from a logistic regression fitted on the other folds. Rows are not covered when their
    class has fewer than 2 images (no other image to learn it from) or is unknown; with fewer
    than 2 such classes nothing is covered and folds is 0.
    """
    labels = np.asarray(labels, np.int64)
    probs = np.zeros((len(labels), n_classes), np.float32)
    folds = fold_count(labels, k)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    covered = np.isin(labels, classes[counts >= 2])
    if not folds:
        return probs, np.zeros(len(labels), bool), 0
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rows = np.flatnonzero(covered)
    model = LogisticRegression(C=C, max_iter=300)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # lbfgs stopping at max_iter still ranks well
        warnings.simplefilter("ignore")
        got = cross_val_predict(model, normalised(embeddings)[rows], labels[rows], cv=cv,
                                method="predict_proba")
    probs[np.ix_(rows, np.unique(labels[rows]))] = got
    return probs, covered, folds


def percentile(scores):
    """Return each score's rank as a share in [0, 1] (the share of scores below it)."""
    ranks = np.empty(len(scores), np.float32)
    ranks[np.argsort(scores, kind="stable")] = np.arange(len(scores))
    return ranks / max(len(scores) - 1, 1)


def outlier_scores(embeddings, labels, probs, covered, k=NEIGHBOURS):
    """Return (n,) outlier scores in [0, 1], higher = more unusual.

    Each row's score is the higher percentile of its k-NN cosine distance and, for rows the
    cross-validation covered, of how little its out-of-fold `probs` claim it for any class
    (`labels`: class indices).
    """
    x = normalised(embeddings)
    if len(x) < 3:
        return np.zeros(len(x), np.float32)
    from cleanlab.outlier import OutOfDistribution

    near = OutOfDistribution({"k": min(k, len(x) - 1)}).fit_score(features=x, verbose=False)
    scores = percentile(-np.asarray(near))
    rows = np.flatnonzero(covered)
    if len(rows) >= 3:  # only the classes the cross-validation learnt, numbered 0..m-1
        classes, y = np.unique(np.asarray(labels)[rows], return_inverse=True)
        p = np.asarray(probs, np.float64)[np.ix_(rows, classes)]
        p /= p.sum(1, keepdims=True).clip(1e-12)
        with warnings.catch_warnings():  # cleanlab's notes on small classes
            warnings.simplefilter("ignore")
            claimed = OutOfDistribution().fit_score(pred_probs=p, labels=y, verbose=False)
        scores[rows] = np.maximum(scores[rows], percentile(-np.asarray(claimed)))
    return scores


def describe(folds, model=MODEL):
    """Say in words which model made the out-of-fold probabilities."""
    return f"cross-validated {model} on embeddings ({folds} folds)"
