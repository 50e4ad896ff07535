"""The cleaner's map: every scored live image at its place in the 2D projection (projection.py,
stored by scoring), with its current label and split and marks for what the other tabs suspect.

The points come as columns (one list per field, row i across them is image i): at 20 000 images
that is a fraction of the size of one object per point. The marks follow the other tabs and,
like them, leave out what an admin kept: a suspected label error is an image cleanlab's
confident learning flags (Suspected label errors), an outlier is among the most unusual by the
outlier score (Outliers), a duplicate is in a near-duplicate pair at the threshold
(Near-duplicates).
"""
import json

import numpy as np

from webapp.cleaning import decisions, scoring
from webapp.model import registry

OUTLIER_MARK = 0.99  # an outlier score is a percentile: about the most unusual 1-2 % are marked
DUPLICATE_MARK = None  # the Near-duplicates tab's default threshold (its pairing method's)


def mark_words(threshold=DUPLICATE_MARK):
    """Say what each mark means."""
    return {"label_issue": "flagged by cleanlab's confident learning (Suspected label errors)",
            "outlier": f"outlier score at least {OUTLIER_MARK} (Outliers)",
            "duplicate": f"in a near-duplicate pair at similarity {threshold} or above "
                         "(Near-duplicates)"}


def drawn(cleaner):
    """Return what projection.json says of the scored version's map, or None before it is drawn."""
    if not cleaner.scored:
        return None
    path = registry.models_dir(cleaner.data_dir) / cleaner.version / scoring.PROJECTION_META
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def map_points(cleaner, threshold=DUPLICATE_MARK):
    """Return the map of a scored Cleaner's version as a dict of columns and what the marks
    mean, or None when the version was scored before maps were drawn."""
    stored = scoring.load_projection(cleaner.data_dir, cleaner.version)
    if stored is None:
        return None
    meta, arrays = stored
    threshold = cleaner.pair_threshold(threshold)
    _, rows, there = np.intersect1d(cleaner.ids, arrays["image_ids"], assume_unique=True,
                                    return_indices=True)
    xy = arrays["xy"][there].astype(np.float64).round(4)
    marks = marked(cleaner, threshold)
    return {"version": cleaner.version, "method": meta["method"], "total": int(len(rows)),
            "unplaced": int(cleaner.unscored + len(cleaner.ids) - len(rows)),
            "marks": mark_words(threshold),
            "points": {"image_id": cleaner.ids[rows].tolist(),
                       "name": [cleaner.names[r] for r in rows],
                       "label": [cleaner.labels[r] for r in rows],
                       "split": np.where(cleaner.valid[rows], "valid", "train").tolist(),
                       "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(),
                       **{name: flags[rows].tolist() for name, flags in marks.items()}}}


def marked(cleaner, threshold=DUPLICATE_MARK):
    """Return {mark: (n,) bool per Cleaner row} for label issues, outliers and duplicates."""
    n = len(cleaner.ids)
    issue, outlier = np.zeros(n, bool), np.zeros(n, bool)
    judged_rows, *_, flagged = cleaner.judged()
    issue[judged_rows[flagged]] = True
    checks = cleaner.embedding_checks()
    if checks is not None:
        kept = decisions.kept_images(cleaner.dataset.conn)
        with np.errstate(invalid="ignore"):  # NaN: an image the checks did not score
            outlier = (checks[3] >= OUTLIER_MARK) & ~np.isin(cleaner.ids, list(kept))
    first, second, _ = cleaner.live_pairs(threshold)
    duplicate = np.isin(cleaner.ids, np.concatenate([first, second]))
    return {"label_issue": issue, "outlier": outlier, "duplicate": duplicate}
