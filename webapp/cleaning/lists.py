"""The cleaner's lists: top losses, near-duplicates, suspected label errors and outliers.

Each list joins a model version's stored scores (scoring.py) with the images as they are now:
losses come from the stored probabilities and each image's CURRENT label, deleted images drop
out, and images or pairs an admin kept (decisions.py) are no longer suggested.
"""
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from webapp.cleaning import crossval, decisions, embedding_models, near_duplicates, scoring
from webapp.model import registry

SPLITS = ("both", "train", "valid")
NONE, MODEL_OWN, EMBEDDINGS, RETRAINING = range(4)  # where out-of-sample probabilities come from
_cache = {}  # (kind, key...) -> a computed result; scores files change only when rescored


@dataclass
class Page:
    """One page of a ranked list."""

    items: list
    total: int
    offset: int
    limit: int
    sources: dict = field(default_factory=dict)  # label issues: {source in words: images}

    @property
    def number(self):
        return self.offset // self.limit + 1 if self.limit else 1

    @property
    def pages(self):
        return max(1, math.ceil(self.total / self.limit)) if self.limit else 1


def _cached(key, compute, keep=4):
    if key not in _cache:
        if len(_cache) >= keep * 3:
            _cache.pop(next(iter(_cache)))
        _cache[key] = compute()
    return _cache[key]


def _stamp(data_dir, version, name):
    path = registry.models_dir(data_dir) / version / name
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


class Cleaner:
    """The cleaning lists of one dataset for one scored model version."""

    def __init__(self, dataset, version):
        self.dataset, self.version = dataset, version
        self.data_dir = dataset.data_dir
        self.scores = (scoring.load_scores(self.data_dir, version, embeddings=False)
                       if version else None)
        if self.scores is not None:
            self._align()

    @property
    def scored(self):
        return self.scores is not None

    def _align(self):
        """Line the scores up with the live labeled images (ids ascending on both sides)."""
        rows = self.dataset.labeled()
        ids = np.fromiter((r["id"] for r in rows), np.int64, len(rows))
        _, here, there = np.intersect1d(ids, self.scores.image_ids, assume_unique=True,
                                        return_indices=True)
        self.unscored = len(ids) - len(here)
        self.ids = ids[here]
        self.names = [rows[i]["path"] for i in here]
        self.labels = [rows[i]["label"] for i in here]
        self.valid = np.fromiter((rows[i]["is_valid"] for i in here), bool, len(here))
        self.probs = self.scores.probs[there]
        self.vocab = list(self.scores.vocab)
        index = {c: i for i, c in enumerate(self.vocab)}
        self.label_idx = np.fromiter((index.get(lbl, -1) for lbl in self.labels), np.int64,
                                     len(here))
        known = self.label_idx >= 0
        picked = self.probs[np.arange(len(here)), np.maximum(self.label_idx, 0)]
        given = np.where(known, picked, np.nan)
        with np.errstate(divide="ignore"):
            self.loss = -np.log(np.clip(given, 1e-12, 1))
        self.prob_given = given
        self.pred = self.probs.argmax(1) if len(here) else np.zeros(0, np.int64)
        self.confidence = self.probs.max(1) if len(here) else np.zeros(0)
        self.row = {int(i): n for n, i in enumerate(self.ids)}

    def item(self, n, score=None):
        """Describe row n as the pages and the JSON lists show it."""
        loss = self.loss[n]
        return {"image_id": int(self.ids[n]), "name": self.names[n], "label": self.labels[n],
                "split": "valid" if self.valid[n] else "train",
                "predicted": self.vocab[self.pred[n]],
                "confidence": round(float(self.confidence[n]), 4),
                "loss": None if np.isnan(loss) else round(float(loss), 4),
                "score": None if score is None or np.isnan(score) else round(float(score), 4)}

    def _split_mask(self, split):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}")
        masks = {"both": np.ones(len(self.ids), bool), "train": ~self.valid, "valid": self.valid}
        return masks[split]

    def _not_kept(self):
        kept = decisions.kept_images(self.dataset.conn)
        return ~np.isin(self.ids, np.fromiter(kept, np.int64, len(kept)))

    def top_losses(self, label=None, split="both", actual=None, predicted=None, offset=0, limit=60,
                   include_kept=False):
        """Return a Page of images by loss under their current label, highest first.

        `actual` and `predicted` select one confusion-matrix cell (current label, predicted label).
        Images whose label the model does not know have no loss and come last.
        """
        mask = self._split_mask(split)
        if label or actual:
            mask &= np.array([v == (label or actual) for v in self.labels], bool)
        if predicted:
            mask &= self.pred == (self.vocab.index(predicted) if predicted in self.vocab else -1)
        if not include_kept:
            mask &= self._not_kept()
        rows = np.flatnonzero(mask)
        key = np.where(np.isnan(self.loss[rows]), -np.inf, self.loss[rows])
        rows = rows[np.argsort(-key, kind="stable")]
        return Page([self.item(n, self.loss[n]) for n in rows[offset:offset + limit]],
                    len(rows), offset, limit)

    @property
    def pair_method(self):
        """Return how this version's pairs are found: near_duplicates.HASH, or COSINE for scores
        stored before perceptual hashes."""
        hashed = self.scored and self.scores.hashes is not None
        return near_duplicates.HASH if hashed or not self.scored else near_duplicates.COSINE

    def pair_threshold(self, threshold=None):
        """Return a checked similarity threshold; None: the default of this version's method."""
        if threshold is None:
            return near_duplicates.DEFAULT_THRESHOLD[self.pair_method]
        return near_duplicates.check_threshold(threshold)

    def duplicates(self, threshold=None, offset=0, limit=30):
        """Return a Page of live image pairs at or above a similarity (None: the method's
        default), most similar first.

        Each item carries both images, the similarity (its score), and flags for a pair that
        straddles train and valid (validation leakage) and for a pair with different labels.
        """
        first, second, sims = self.live_pairs(threshold)
        items = []
        for a, b, s in zip(first[offset:offset + limit], second[offset:offset + limit],
                           sims[offset:offset + limit], strict=True):
            x, y = self.item(self.row[int(a)]), self.item(self.row[int(b)])
            items.append({"first": x, "second": y, "similarity": round(float(s), 4),
                          "score": round(float(s), 4),
                          "straddles_split": x["split"] != y["split"],
                          "labels_differ": x["label"] != y["label"]})
        return Page(items, len(first), offset, limit)

    def live_pairs(self, threshold=None):
        """Return (first ids, second ids, similarities) of the pairs of live images at or above
        a similarity (None: the method's default) that no one kept as distinct, most similar
        first."""
        threshold = self.pair_threshold(threshold)
        first, second, sims = self._pairs(threshold)
        keep = np.isin(first, self.ids) & np.isin(second, self.ids) & (sims >= threshold)
        kept = decisions.kept_pairs(self.dataset.conn)
        if kept:
            keep &= np.array([(int(a), int(b)) not in kept
                              for a, b in zip(first, second, strict=True)], bool)
        return first[keep], second[keep], sims[keep]

    def _pairs(self, threshold):
        """Return (first ids, second ids, similarities) of every scored pair above threshold."""
        stored = scoring.load_pairs(self.data_dir, self.version)
        if stored is not None and threshold >= stored[3]["floor"]:
            return stored[:3]

        def search():  # below the stored floor: search now (tile by tile), once per threshold
            scores = scoring.load_scores(self.data_dir, self.version)
            _, p = near_duplicates.find_pairs(scores.hashes, scores.embeddings, threshold)
            return scores.image_ids[p.first], scores.image_ids[p.second], p.similarity

        return _cached(("pairs", str(self.data_dir), self.version,
                        _stamp(self.data_dir, self.version, scoring.SCORES), threshold), search)

    def embedding_checks(self):
        """Return (meta, probs, covered, outlier) of the cheap embedding models, row-aligned
        (rows they did not score: not covered, outlier NaN), or None before they ran."""
        got = scoring.load_embedding_checks(self.data_dir, self.version)
        if got is None:
            return None
        meta, a = got
        probs = np.zeros_like(self.probs)
        covered, outlier = np.zeros(len(self.ids), bool), np.full(len(self.ids), np.nan)
        _, mine, theirs = np.intersect1d(self.ids, a["image_ids"], assume_unique=True,
                                         return_indices=True)
        probs[mine] = crossval.aligned(a["probs"][theirs], list(meta["vocab"]), self.vocab)
        covered[mine], outlier[mine] = a["covered"][theirs], a["outlier"][theirs]
        return meta, probs, covered, outlier

    def out_of_sample(self):
        """Return (rows, probabilities, source per row) that no model saw in training.

        Each row takes the most thorough source that covers it: k-fold retraining (crossval.py)
        for the training images it scored, else the cross-validated model on the embeddings
        (embedding_models.py), else, for validation images, the model's own prediction.
        """
        source = np.where(self.valid, MODEL_OWN, NONE).astype(np.int8)
        probs = np.where(self.valid[:, None], self.probs, 0).astype(np.float32)
        checks = self.embedding_checks()
        if checks is not None:
            source[checks[2]], probs[checks[2]] = EMBEDDINGS, checks[1][checks[2]]
        cv = scoring.load_cv_scores(self.data_dir, self.version)
        if cv is not None:
            _, mine, theirs = np.intersect1d(self.ids, cv.image_ids, assume_unique=True,
                                             return_indices=True)
            train = ~self.valid[mine]
            source[mine[train]] = RETRAINING
            probs[mine[train]] = crossval.aligned(cv.probs[theirs[train]], list(cv.vocab),
                                                  self.vocab)
        rows = np.flatnonzero(source != NONE)
        return rows, probs[rows], source[rows]

    def source_names(self):
        """Return {source code: what made those probabilities, in words}."""
        names = {MODEL_OWN: "the model's own predictions (validation images)"}
        checks = scoring.load_embedding_checks(self.data_dir, self.version)
        if checks is not None:
            names[EMBEDDINGS] = embedding_models.describe(checks[0]["folds"], checks[0]["model"])
        cv = scoring.load_cv_scores(self.data_dir, self.version)
        if cv is not None:
            names[RETRAINING] = f"k-fold retraining ({cv.meta['folds']} folds)"
        return names

    def judged(self):
        """Return (rows, probabilities, source, label quality, rank, flagged) of the images not
        kept whose label out-of-sample probabilities can judge (see label_issues)."""
        rows, probs, source = self.out_of_sample()
        keep = self.label_idx[rows] >= 0
        if len(rows):
            keep &= self._not_kept()[rows]
        rows, probs, source = rows[keep], probs[keep], source[keep]
        labels = self.label_idx[rows]
        split = self.valid[rows]
        quality, rank, flagged = _cached(
            ("quality", str(self.data_dir), self.version,
             *(_stamp(self.data_dir, self.version, name)
               for name in (scoring.SCORES, scoring.CV_SCORES, scoring.EMBEDDING_CV)),
             rows.tobytes(), labels.tobytes()),
            lambda: rank_within_groups(labels, probs, split))
        return rows, probs, source, quality, rank, flagged

    def label_issues(self, offset=0, limit=30):
        """Return a Page of suspected label errors, most suspect first.

        Ranked by cleanlab's self-confidence label-quality score on out-of-sample probabilities,
        within each split (rank_within_groups); images cleanlab's confident learning flags come
        first. Items say the suggested label and
        `judged_by`, the source of its probability (beside the model's own `predicted`); the
        Page's `sources` says how many images each source of probabilities judged.
        """
        rows, probs, source, quality, rank, flagged = self.judged()
        order = np.lexsort((quality, rank, ~flagged))
        names = self.source_names()
        judges = {**names, MODEL_OWN: "the model itself (a validation image)"}
        items = []
        for k in order[offset:offset + limit]:
            item = self.item(rows[k], quality[k])
            best = int(probs[k].argmax())
            item.update(suggested=self.vocab[best],
                        suggested_probability=round(float(probs[k][best]), 4),
                        judged_by=judges[int(source[k])],
                        quality=round(float(quality[k]), 4), flagged=bool(flagged[k]))
            items.append(item)
        counts = {names[c]: int(n) for c, n in zip(*np.unique(source, return_counts=True),
                                                   strict=True)}
        return Page(items, len(rows), offset, limit, counts)

    def outliers(self, offset=0, limit=30):
        """Return a Page of images by outlier score (embedding_models.py), most unusual first,
        or None when the version was scored before outlier scores existed."""
        checks = self.embedding_checks()
        if checks is None:
            return None
        score = checks[3]
        rows = np.flatnonzero(~np.isnan(score) & self._not_kept())
        rows = rows[np.argsort(-score[rows], kind="stable")]
        return Page([self.item(n, score[n]) for n in rows[offset:offset + limit]],
                    len(rows), offset, limit)

    def coverage(self):
        """Say which images the label-issue list can judge, and from which source."""
        cv = scoring.load_cv_scores(self.data_dir, self.version)
        checks = self.embedding_checks()
        n_train = int((~self.valid).sum())
        covered = int(np.isin(self.ids[~self.valid], cv.image_ids).sum()) if cv is not None else 0
        return {"valid": int(self.valid.sum()), "train": n_train, "train_covered": covered,
                "cv": cv.meta if cv is not None else None,
                "embedding": checks[0] if checks else None,
                "embedding_covered": int(checks[2].sum()) if checks else 0}


def rank_label_issues(labels, probs):
    """Return (label quality, flagged) per row: cleanlab's self-confidence score and whether
    confident learning finds the row's label likely wrong."""
    n = len(labels)
    if n == 0:
        return np.zeros(0), np.zeros(0, bool)
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.asarray(probs, np.float64)
    probs = probs / probs.sum(1, keepdims=True).clip(1e-12)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    with warnings.catch_warnings():  # "too few examples in class k": small classes are normal here
        warnings.simplefilter("ignore", UserWarning)
        try:
            flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
        except (ValueError, AssertionError):  # e.g. a class with no example among these rows
            flagged = quality < 0.5
    return np.asarray(quality), np.asarray(flagged, bool)


def rank_within_groups(labels, probs, groups):
    """Return (label quality, rank, flagged) per row, judging each group on its own.

    The training images' embeddings were fitted to their labels and the validation images'
    were not, so even out-of-fold probabilities on them are calibrated differently: a
    validation image's ordinary doubt outranks a training image's strong one. Within each
    group cleanlab flags (its thresholds are per-class averages) and ranks; `rank` is the
    row's mid-rank share of its group, 0 = most suspect, so the lists interleave the groups in
    proportion. On bench/clean.py loop's set (resnet18 from scratch, 10% flipped) this put 65%
    of the flipped images among the first n, against 52% ranked together.
    """
    groups = np.asarray(groups)
    quality = np.zeros(len(labels))
    rank, flagged = np.zeros(len(labels)), np.zeros(len(labels), bool)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        quality[rows], flagged[rows] = rank_label_issues(labels[rows], probs[rows])
        order = np.argsort(quality[rows], kind="stable")
        rank[rows[order]] = (np.arange(len(rows)) + 0.5) / len(rows)
    return quality, rank, flagged


def status(cleaner):
    """Return what the pages say about the scores: model, when scored, coverage, CV cost."""
    if cleaner.version is None:
        return {"version": None, "scored": False}
    try:
        metrics = registry.version_record(cleaner.data_dir, cleaner.version)["metrics"]
    except registry.ModelError:
        metrics = {}
    out = {"version": cleaner.version, "scored": cleaner.scored, "metrics": metrics,
           "active": cleaner.version == registry.active_version(cleaner.data_dir),
           "train_seconds": metrics.get("seconds"),
           "cv_cost": {k: crossval.estimate_seconds(metrics, k) for k in (3, 5, 10)}}
    if cleaner.scored:
        out.update(meta=cleaner.scores.meta, images=len(cleaner.ids), unscored=cleaner.unscored,
                   coverage=cleaner.coverage())
    return out
