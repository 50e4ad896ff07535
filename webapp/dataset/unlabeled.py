"""The unlabeled images as a queue, in the order they came or by the model's confidence.

The active model's suggestion for an unlabeled image (top class and its probability) is kept per
model version in the `suggestions` table (schema.sql): one image at a time as the queue shows
it, or all of them at once by the "suggest" job, which the confidence orders need.
"""
from dataclasses import dataclass

from webapp.core import db, images

ORDERS = {"added": "in the order they came",
          "least": "least confident first (what the model most needs)",
          "most": "most confident first (quick to confirm)"}
BATCH = 16
@dataclass
class Waiting:
    """One unlabeled image in the queue, with the model's suggestion if there is one."""

    id: int
    name: str | None
    source: str
    suggested: str | None = None
    confidence: float | None = None


def queue(conn, version=None, order="added", skipped=(), front=None, limit=2):
    """Return the next unlabeled images: `front` first, skipped ones last, then by `order`."""
    skipped = [int(i) for i in skipped][-500:]
    by = {"least": "s.confidence IS NULL, s.confidence ASC,",
          "most": "s.confidence IS NULL, s.confidence DESC,"}.get(order, "")
    rows = conn.execute(
        "SELECT i.id, i.original_name, i.source, s.label, s.confidence FROM images i "
        "LEFT JOIN suggestions s ON s.image_id = i.id AND s.version = ? "
        "WHERE i.deleted IS NULL AND i.label IS NULL "
        f"ORDER BY i.id = ? DESC, i.id IN ({','.join('?' * len(skipped))}) ASC, {by} i.id "
        "LIMIT ?", (version, front or -1, *skipped, limit)).fetchall()
    return [Waiting(*r) for r in rows]


def counts(conn, version=None):
    """Return (unlabeled images, how many of them have the version's suggestion)."""
    row = conn.execute(
        "SELECT COUNT(*), COUNT(s.image_id) FROM images i "
        "LEFT JOIN suggestions s ON s.image_id = i.id AND s.version = ? "
        "WHERE i.deleted IS NULL AND i.label IS NULL", (version,)).fetchone()
    return row[0], row[1]


def unscored(conn, version):
    """Return the ids of unlabeled images the version has no suggestion for."""
    return [r[0] for r in conn.execute(
        "SELECT i.id FROM images i LEFT JOIN suggestions s ON s.image_id = i.id AND s.version = ? "
        "WHERE i.deleted IS NULL AND i.label IS NULL AND s.image_id IS NULL ORDER BY i.id",
        (version,))]


def suggest(dataset, classifier, image_ids):
    """Predict the images' classes with a classifier and keep its suggestions; return them."""
    rows = [dataset.image(i) for i in image_ids]
    pictures = [images.decode(dataset.file_path(r).read_bytes(), dataset.max_pixels) for r in rows]
    found = {}
    for row, prediction in zip(rows, classifier.predict_batch(pictures), strict=True):
        found[row["id"]] = prediction.ranked[0]
    with db.transaction(dataset.conn):
        dataset.conn.executemany(
            "INSERT OR REPLACE INTO suggestions(version, image_id, label, confidence) "
            "VALUES (?,?,?,?)",
            [(classifier.version, i, label, float(p)) for i, (label, p) in found.items()])
    return found


def suggest_all(dataset, classifier, on_progress=None):
    """Keep the classifier's suggestion for every unlabeled image it has none for; return how many.

    `on_progress(done, total, phase=, message=)` is called per batch and may raise to stop.
    """
    ids = unscored(dataset.conn, classifier.version)
    progress = on_progress or (lambda *a, **kw: None)
    progress(0, len(ids), phase="suggesting",
             message=f"Model {classifier.version} looks at {len(ids)} unlabeled images")
    for start in range(0, len(ids), BATCH):
        suggest(dataset, classifier, ids[start:start + BATCH])
        progress(min(start + BATCH, len(ids)))
    return len(ids)
