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

from webapp.core.words import plural
from webapp.dataset import classnames, unlabeled
from webapp.dataset.refusals import ClassExists
from webapp.dataset.store import Dataset, StoreError, check_class_name
from webapp.ingest import downloads, uploads, zip_folders
from webapp.ingest.uploads import UploadRefused
from webapp.jobs import imports, runner as jobs
from webapp.web.auth import admin_required
from webapp.web.errors import sentence
from webapp.web.resources import data_dir, get_dataset, get_model, upload_cap

bp = Blueprint("labeling", __name__, url_prefix="/label")
ACTOR = "admin"
CLASS_EVENTS = ("add_class", "rename_class", "delete_class", "merge_classes")
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
    return dataset.history(limit=limit, kinds=CLASS_EVENTS, by_hand=True)


def _overview(offer=None, status=200, refused=None):
    """Render the overview; `offer` is a merge to propose ({"names", "into"}) beside the error.

    `refused` is a class form's refusal, shown beside that form with what was typed in it:
    {"form": "new-class", "rename", "delete" or "changes", "message", "name", "value"}.
    """
    dataset = get_dataset()
    counts = dataset.class_counts()
    look_alikes = classnames.merge_suggestions({k: n["train"] + n["valid"]
                                                for k, n in counts.items()})
    return render_template("label/index.html", counts=counts,
                           unlabeled=dataset.unlabeled_count(), changes=_class_changes(dataset),
                           imports=imports.recent_imports(data_dir()), offer=offer,
                           look_alikes=look_alikes, refused=refused or {}), status


def _refused(form, error, name=None, value=""):
    """Show the overview again with a class form's refusal beside it, its input kept (400)."""
    return _overview(status=400, refused={"form": form, "message": sentence(str(error)),
                                          "name": name, "value": value})


@bp.route("/")
@admin_required
def index():
    return _overview()


@bp.route("/classes", methods=["POST"])
@admin_required
def create_class():
    typed, dataset = request.form.get("name", ""), get_dataset()
    try:
        name = check_class_name(typed)
        existed = name in dataset.class_names()
        dataset.change("add_class", name=name, actor=ACTOR)
    except StoreError as e:
        return _refused("new-class", e, value=typed)
    flash(f"There is a class {name!r} already: nothing changed." if existed
          else f"Class {name!r} is ready.")
    return _back()


@bp.route("/classes/<name>/rename", methods=["POST"])
@admin_required
def rename_class(name):
    try:
        new = get_dataset().change("rename_class", name=name,
                                   new_name=request.form.get("new_name"), actor=ACTOR)
    except ClassExists as e:
        if e.name != name:  # two names for one class: offer to merge them instead
            return _overview(offer={"names": [name], "into": e.name}, status=409)
        return _refused("rename", e, name=name, value=request.form.get("new_name", ""))
    except StoreError as e:
        return _refused("rename", e, name=name, value=request.form.get("new_name", ""))
    flash(f"Renamed {name!r} to {new!r}; its images and cleaned.csv follow.")
    return _back()


@bp.route("/classes/merge", methods=["POST"])
@admin_required
def merge_classes():
    names, into = request.form.getlist("names"), request.form.get("into", "").strip()
    if not into:
        return _refused("merge", "say which class to merge them into")
    try:
        moved = get_dataset().merge_classes(names, into, actor=ACTOR)
    except StoreError as e:
        return _refused("merge", e, value=into)
    merged = ", ".join(repr(n) for n in names if n != into)
    flash(f"Merged {merged} into {into!r}: {plural(moved, 'image')} moved; cleaned.csv follows. "
          "Undo it below if that was a mistake.")
    return _back()


@bp.route("/classes/<name>/delete", methods=["POST"])
@admin_required
def delete_class(name):
    images_to = request.form.get("images_to", "")
    if images_to not in ("unlabel", "delete"):
        return _refused("delete", "say whether the class's images become unlabeled or are "
                        "deleted", name=name)
    try:
        get_dataset().change("delete_class", name=name, images_to=images_to, actor=ACTOR)
    except StoreError as e:
        return _refused("delete", e, name=name)
    fate = "deleted (restorable)" if images_to == "delete" else "unlabeled"
    flash(f"Deleted class {name!r}; its images are {fate}. Undo it below if that was a mistake.")
    return _back()


@bp.route("/undo", methods=["POST"])
@admin_required
def undo():
    change_id = request.form.get("change_id", type=int)
    if change_id is None:
        return _refused("changes", "say which change to undo")
    try:
        undone = get_dataset().undo_change(change_id, actor=ACTOR)
    except StoreError as e:
        return _refused("changes", e)
    flash(f"Undone: {undone.text(CLASS_EVENTS)}.")
    return _back()


# ---- uploads ------------------------------------------------------------------------------

def _upload_page(refused=None, status=200, **page):
    """Render the upload page; `refused` is {"form": "files" or "zip", "message"}, beside it."""
    return render_template("label/upload.html", classes=get_dataset().class_names(),
                           refused=refused or {}, typed=request.form, **page), status


@bp.route("/upload")
@admin_required
def upload_page():
    return _upload_page()


def _upload_files():
    """Import the request's files in this request (a batch is small) and return the job."""
    files = [(f.filename, f.read()) for f in request.files.getlist("files") if f.filename]
    if not files:
        raise UploadRefused("Choose at least one picture to upload.")
    upload = imports.upload_of(request.form.get("upload_id"), request.form.get("upload_total"))
    token = uploads.stage_files(data_dir(), files)
    params = uploads.job_params(current_app.config, token, _label_field(), ACTOR, upload=upload)
    return jobs.run_here(data_dir(), "upload", params, actor=ACTOR)


@bp.route("/upload", methods=["POST"])
@admin_required
def upload():
    try:
        job = _upload_files()
    except (UploadRefused, StoreError) as e:
        return _upload_page({"form": "files", "message": sentence(str(e))}, 400)
    return _upload_page(job=job, items=jobs.items(data_dir(), job["id"]))


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


@bp.route("/upload/stopped", methods=["POST"])
@admin_required
def upload_stopped():
    """The upload page's word that the rest of an upload will not come (left, or it failed)."""
    imports.mark_stopped(data_dir(), request.form.get("upload_id", ""))
    return "", 204


def _zip_caps():
    return current_app.config["ZIP_MAX_ENTRIES"], current_app.config["ZIP_MAX_BYTES"]


def _import_zip(token, label, label_map=None):
    params = uploads.job_params(current_app.config, token, label, ACTOR, *_zip_caps(),
                                label_map=label_map)
    job_id = jobs.start(data_dir(), "upload", params, actor=ACTOR)
    return _back("labeling.show_import", job_id=job_id)


@bp.route("/upload-zip", methods=["POST"])
@admin_required
@upload_cap("MAX_ZIP_UPLOAD_BYTES")
def upload_zip():
    """Stage a zip; import it at once, or first ask where look-alike folders should go."""
    archive = request.files.get("archive")
    try:
        label = _label_field()
        if not archive or not archive.filename:
            raise UploadRefused("choose a zip file of class folders")
        token = uploads.stage_zip(data_dir(), archive.save, *_zip_caps())
    except (UploadRefused, StoreError) as e:
        return _upload_page({"form": "zip", "message": sentence(str(e))}, 400)
    dataset = get_dataset()
    look_alikes = zip_folders.look_alikes(dataset, token, label, *_zip_caps())
    if not look_alikes:
        return _import_zip(token, label)
    return render_template("label/zip_folders.html", token=token, label=label,
                           folders=look_alikes, classes=dataset.class_names())


@bp.route("/upload-zip/<token>", methods=["POST"])
@admin_required
def import_zip(token):
    """Import a staged zip with its folders mapped as the admin chose."""
    uploads.staged_folder(data_dir(), token)
    label_map = zip_folders.label_map(request.form.getlist("folder"),
                                      request.form.getlist("into"))
    return _import_zip(token, _label_field(), label_map)


# ---- URL lists ----------------------------------------------------------------------------

def _urls_page(error=None, status=200):
    """Render the URL-list form, with what was typed in it and why it was refused, if it was."""
    return render_template("label/urls.html", classes=get_dataset().class_names(),
                           workers=downloads.DEFAULT_WORKERS, max_workers=downloads.MAX_WORKERS,
                           error=error, typed=request.form), status


@bp.route("/urls")
@admin_required
def urls_page():
    return _urls_page()


@bp.route("/urls", methods=["POST"])
@admin_required
def import_urls():
    text = request.form.get("urls", "")
    listed = request.files.get("url_file")
    if listed and listed.filename:
        text += "\n" + listed.read().decode("utf-8", errors="replace")
    found = downloads.parse_url_list(text, request.form.get("max_count", type=int))
    if not found.urls:
        why = " ".join(sentence(note) for note in found.notes()) or (
            "The list is empty: paste image addresses, one per line, or choose a file of them.")
        return _urls_page(f"There are no http(s) URLs in that list. {why}", 400)
    try:
        label = _label_field()
    except StoreError as e:
        return _urls_page(sentence(str(e)), 400)
    workers = request.form.get("workers", downloads.DEFAULT_WORKERS, type=int)
    params = downloads.job_params(current_app.config, found.urls, label, workers, ACTOR)
    job_id = jobs.start(data_dir(), "download", params, actor=ACTOR)
    for note in found.notes():
        flash(sentence(note), "warning")
    return _back("labeling.show_import", job_id=job_id)


@bp.route("/imports/<int:job_id>")
@admin_required
def show_import(job_id):
    found = imports.one_import(data_dir(), job_id)
    if found is None:
        abort(404, description=f"There is no import #{job_id}.")
    return render_template("label/import.html", **found)


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
    try:
        label = _label_field()
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
