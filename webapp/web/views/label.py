"""Labeling pages: classes, uploads, URL-list imports, and the keyboard-driven queue."""
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from webapp.dataset import unlabeled
from webapp.dataset.store import Dataset, check_class_name
from webapp.ingest import downloads, uploads
from webapp.jobs import kinds, runner as jobs
from webapp.web.auth import admin_required
from webapp.web.errors import sentence
from webapp.web.resources import data_dir, get_dataset, get_model, upload_cap

bp = Blueprint("labeling", __name__, url_prefix="/label")
ACTOR = "admin"
CLASS_EVENTS = ("add_class", "rename_class", "delete_class")
KEPT = 200  # skipped images and undoable queue changes remembered per session



def _back(endpoint="labeling.index", **values):
    return redirect(url_for(endpoint, **values)), 303


def _label_field():
    """Return the form's class, or None for unlabeled; a name that cannot be a class is refused."""
    label = request.form.get("label", "").strip()
    return check_class_name(label) if label else None


# ---- overview and classes ---------------------------------------------------------------

def _class_changes(dataset, limit=10):
    """Return the latest class events to offer undo for (not those that came with an import)."""
    events = dataset.history(limit=300)
    with_images = {e["change_id"] for e in events if e["kind"] == "add"}
    return [e for e in events if e["kind"] in CLASS_EVENTS and e["undoes"] is None
            and e["change_id"] not in with_images][:limit]


@bp.route("/")
@admin_required
def index():
    dataset = get_dataset()
    return render_template("label/index.html", counts=dataset.class_counts(),
                           unlabeled=dataset.unlabeled_count(), changes=_class_changes(dataset),
                           imports=kinds.recent_imports(data_dir()))


@bp.route("/classes", methods=["POST"])
@admin_required
def create_class():
    name = get_dataset().change("add_class", name=request.form.get("name"), actor=ACTOR)
    flash(f"Class {name!r} is ready.")
    return _back()


@bp.route("/classes/<name>/rename", methods=["POST"])
@admin_required
def rename_class(name):
    new = get_dataset().change("rename_class", name=name, new_name=request.form.get("new_name"),
                               actor=ACTOR)
    flash(f"Renamed {name!r} to {new!r}; its images and cleaned.csv follow.")
    return _back()


@bp.route("/classes/<name>/delete", methods=["POST"])
@admin_required
def delete_class(name):
    images_to = request.form.get("images_to", "")
    if images_to not in ("unlabel", "delete"):
        abort(400, description="Say whether the class's images become unlabeled or are deleted.")
    get_dataset().change("delete_class", name=name, images_to=images_to, actor=ACTOR)
    fate = "deleted (restorable)" if images_to == "delete" else "unlabeled"
    flash(f"Deleted class {name!r}; its images are {fate}. Undo it below if that was a mistake.")
    return _back()


@bp.route("/undo", methods=["POST"])
@admin_required
def undo():
    change_id = request.form.get("change_id", type=int)
    if change_id is None:
        abort(400, description="Say which change to undo.")
    get_dataset().undo_change(change_id, actor=ACTOR)
    flash(f"Undid change #{change_id}.")
    return _back()


# ---- uploads ------------------------------------------------------------------------------

@bp.route("/upload")
@admin_required
def upload_page():
    return render_template("label/upload.html", classes=get_dataset().class_names())


def _upload_files():
    """Import the request's files in this request (a batch is small) and return the job."""
    files = [(f.filename, f.read()) for f in request.files.getlist("files") if f.filename]
    if not files:
        abort(400, description="Choose at least one picture to upload.")
    token = uploads.stage_files(data_dir(), files)
    params = uploads.job_params(current_app.config, token, _label_field(), ACTOR)
    return jobs.run_here(data_dir(), "upload", params, actor=ACTOR)


@bp.route("/upload", methods=["POST"])
@admin_required
def upload():
    job = _upload_files()
    return render_template("label/upload.html", classes=get_dataset().class_names(), job=job,
                           items=jobs.items(data_dir(), job["id"]))


@bp.route("/upload.json", methods=["POST"])
@admin_required
def upload_json():
    """One batch of the browser's upload: each file's outcome, with links to images."""
    job = _upload_files()
    items = jobs.items(data_dir(), job["id"])
    for item in items:
        if item["image_id"]:
            item["url"] = url_for("media.image", image_id=item["image_id"])
    return {"job": job["id"], "items": items, "message": job["message"]}


@bp.route("/upload-zip", methods=["POST"])
@admin_required
@upload_cap("MAX_ZIP_UPLOAD_BYTES")
def upload_zip():
    archive = request.files.get("archive")
    if not archive or not archive.filename:
        abort(400, description="Choose a zip file of class folders.")
    cfg = current_app.config
    caps = (cfg["ZIP_MAX_ENTRIES"], cfg["ZIP_MAX_BYTES"])
    token = uploads.stage_zip(data_dir(), archive.save, *caps)
    job_id = jobs.start(data_dir(), "upload",
                        uploads.job_params(cfg, token, _label_field(), ACTOR, *caps), actor=ACTOR)
    return _back("labeling.show_import", job_id=job_id)


# ---- URL lists ----------------------------------------------------------------------------

@bp.route("/urls")
@admin_required
def urls_page():
    return render_template("label/urls.html", classes=get_dataset().class_names(),
                           workers=downloads.DEFAULT_WORKERS, max_workers=downloads.MAX_WORKERS)


@bp.route("/urls", methods=["POST"])
@admin_required
def import_urls():
    text = request.form.get("urls", "")
    listed = request.files.get("url_file")
    if listed and listed.filename:
        text += "\n" + listed.read().decode("utf-8", errors="replace")
    found = downloads.parse_url_list(text, request.form.get("max_count", type=int))
    if not found.urls:
        abort(400, description="There are no http(s) URLs in that list. "
                               + " ".join(found.notes()))
    label = _label_field()
    workers = request.form.get("workers", downloads.DEFAULT_WORKERS, type=int)
    params = downloads.job_params(current_app.config, found.urls, label, workers, ACTOR)
    job_id = jobs.start(data_dir(), "download", params, actor=ACTOR)
    for note in found.notes():
        flash(sentence(note))
    return _back("labeling.show_import", job_id=job_id)


@bp.route("/imports/<int:job_id>")
@admin_required
def show_import(job_id):
    job = jobs.get(data_dir(), job_id)
    if job is None or job["kind"] not in ("download", "upload"):
        abort(404, description=f"There is no import #{job_id}.")
    return render_template("label/import.html", job=job, items=jobs.items(data_dir(), job_id),
                           counts=jobs.item_counts(data_dir(), job_id))


# ---- from a classified picture ------------------------------------------------------------

@bp.route("/from-classify", methods=["POST"])
@admin_required
def add_classified():
    sha = request.form.get("sha256", "")
    label = _label_field()
    added = get_dataset().add_image(uploads.stashed(data_dir(), sha), label=label,
                                    source="classify", name=request.form.get("name") or None,
                                    actor=ACTOR)
    if added.status == "rejected":
        abort(400, description=f"That picture cannot join the dataset: {added.reason}.")
    uploads.forget_stashed(data_dir(), sha)
    where = f"class {label!r}" if label else "the unlabeled images"
    if added.status == "duplicate":
        flash(f"The dataset has that picture already (image #{added.image_id}).")
    else:
        flash(f"Added the picture to {where} (image #{added.image_id}).")
    return _back("classify.index")


# ---- the queue ----------------------------------------------------------------------------

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
    return _back("labeling.queue", order=request.form.get("order", "added"))


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
    label = _label_field()
    if label is None:
        abort(400, description="Choose a class for the image.")
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
    dataset.undo_change(change_id, actor=ACTOR)
    session["queue_front"] = image_id
    flash(f"Undone: {dataset.history(limit=1, image_id=image_id)[0]['text']}.")
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
