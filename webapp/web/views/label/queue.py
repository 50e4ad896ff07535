"""The unlabeled queue: one image at a time, labeled, deleted or skipped, with undo-last."""
from flask import current_app, flash, render_template, request, session

from webapp.dataset import unlabeled
from webapp.dataset.store import Dataset, StoreError
from webapp.jobs import runner as jobs
from webapp.web.auth import admin_required
from webapp.web.errors import sentence
from webapp.web.resources import data_dir, get_dataset, get_model
from webapp.web.views.label.blueprint import ACTOR, back, bp, label_field

KEPT = 200  # skipped images and undoable queue changes remembered per session


def _remember(key, value):
    kept = [v for v in session.get(key, []) if v != value] + [value]
    session[key] = kept[-KEPT:]


@bp.route("/queue")
@admin_required
def queue():
    dataset, model = get_dataset(), get_model()
    classifier = model.classifier
    version = classifier.version if classifier else None
    order = request.args.get("order", "added")
    order = order if order in unlabeled.ORDERS and (version or order == "added") else "added"
    waiting = unlabeled.queue(dataset.conn, version, order, session.get("queue_skipped", []),
                              session.get("queue_front"))
    current = waiting[0] if waiting else None
    if current and classifier and current.suggested is None:
        current.suggested, current.confidence = unlabeled.suggest(dataset, classifier,
                                                                  [current.id])[current.id]
    total, scored = unlabeled.counts(dataset.conn, version)
    return render_template(
        "label/queue.html", current=current, following=waiting[1:], order=order,
        orders=unlabeled.ORDERS, classes=dataset.class_names(), version=version,
        total=total, scored=scored, can_undo=bool(session.get("queue_changes")),
        suggest_job=jobs.running(data_dir(), "suggest"))


def _still_queued(image_id):
    """Tell whether an image still waits for a label; flash why not (another tab was faster)."""
    row = get_dataset().image(image_id)
    if row is None or row["deleted"] or row["label"] is not None:
        state = "deleted" if row is not None and row["deleted"] else "labeled"
        flash(f"Image #{image_id} was {state} meanwhile; the queue has moved on.", "error")
        return False
    return True


def _done_in_queue(image_id):
    """Remember the change just made to an image, so undo-last can revert it."""
    change_id = get_dataset().history(limit=1, image_id=image_id)[0]["change_id"]
    _remember("queue_changes", [change_id, image_id])
    session["queue_skipped"] = [i for i in session.get("queue_skipped", []) if i != image_id]
    session.pop("queue_front", None)


def _to_queue():
    return back("labeling.queue", order=request.form.get("order", "added"))


def _change_in_queue(image_id, done, **change):
    """Make one change to a queued image, remember it for undo-last, and go on to the next."""
    if _still_queued(image_id):
        get_dataset().change(image_id=image_id, actor=ACTOR, **change)
        _done_in_queue(image_id)
        flash(done)
    return _to_queue()


@bp.route("/queue/<int:image_id>/label", methods=["POST"])
@admin_required
def label_image(image_id):
    try:
        label = label_field()
    except StoreError as e:
        flash(sentence(str(e)), "error")
        return _to_queue()
    if label is None:
        flash("Choose a class for the image.", "error")
        return _to_queue()
    return _change_in_queue(image_id, f"Image #{image_id} is {label!r}.", kind="relabel",
                            label=label)


@bp.route("/queue/<int:image_id>/delete", methods=["POST"])
@admin_required
def delete_image(image_id):
    return _change_in_queue(image_id, f"Deleted image #{image_id} (undo brings it back).",
                            kind="delete")


@bp.route("/queue/<int:image_id>/skip", methods=["POST"])
@admin_required
def skip_image(image_id):
    _remember("queue_skipped", image_id)
    session.pop("queue_front", None)
    flash(f"Skipped image #{image_id}: it comes back at the end of the queue.")
    return _to_queue()


@bp.route("/queue/undo", methods=["POST"])
@admin_required
def undo_in_queue():
    changes = session.get("queue_changes", [])
    if not changes:
        flash("Nothing to undo: this queue has made no change yet.", "error")
        return _to_queue()
    dataset = get_dataset()
    change_id, image_id = changes[-1]
    session["queue_changes"] = changes[:-1]
    try:
        undone = dataset.undo_change(change_id, actor=ACTOR)
    except StoreError as e:  # undone elsewhere already, or changed again since
        flash(sentence(str(e)), "error")
        return _to_queue()
    session["queue_front"] = image_id
    flash(f"Undone: {undone.text()}.")
    return _to_queue()


@bp.route("/queue/suggest", methods=["POST"])
@admin_required
def start_suggestions():
    try:
        jobs.start(data_dir(), "suggest", {"store": Dataset.settings(current_app.config)},
                   actor=ACTOR)
    except jobs.JobRefused as e:
        flash(str(e), "error")
    return _to_queue()
