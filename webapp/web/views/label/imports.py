"""The import pages: files, zips, URL lists, an import's page, and a classified picture."""
from flask import abort, current_app, flash, render_template, request, url_for

from webapp.dataset.store import StoreError
from webapp.ingest import downloads, uploads, zip_folders
from webapp.ingest.uploads import UploadRefused
from webapp.jobs import imports as import_jobs, runner as jobs
from webapp.web.auth import admin_required
from webapp.web.errors import sentence
from webapp.web.resources import data_dir, get_dataset, get_model, upload_cap
from webapp.web.views.label.blueprint import ACTOR, back, bp, label_field


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
    upload = import_jobs.upload_of(request.form.get("upload_id"), request.form.get("upload_total"))
    token = uploads.stage_files(data_dir(), files)
    params = uploads.job_params(current_app.config, token, label_field(), ACTOR, upload=upload)
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
    import_jobs.mark_stopped(data_dir(), request.form.get("upload_id", ""))
    return "", 204


def _zip_caps():
    return current_app.config["ZIP_MAX_ENTRIES"], current_app.config["ZIP_MAX_BYTES"]


def _import_zip(token, label, label_map=None):
    params = uploads.job_params(current_app.config, token, label, ACTOR, *_zip_caps(),
                                label_map=label_map)
    job_id = jobs.start(data_dir(), "upload", params, actor=ACTOR)
    return back("labeling.show_import", job_id=job_id)


@bp.route("/upload-zip", methods=["POST"])
@admin_required
@upload_cap("MAX_ZIP_UPLOAD_BYTES")
def upload_zip():
    """Stage a zip; import it at once, or first ask where look-alike folders should go."""
    archive = request.files.get("archive")
    try:
        label = label_field()
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
    return _import_zip(token, label_field(), label_map)


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
        label = label_field()
    except StoreError as e:
        return _urls_page(sentence(str(e)), 400)
    workers = request.form.get("workers", downloads.DEFAULT_WORKERS, type=int)
    params = downloads.job_params(current_app.config, found.urls, label, workers, ACTOR)
    job_id = jobs.start(data_dir(), "download", params, actor=ACTOR)
    for note in found.notes():
        flash(sentence(note), "warning")
    return back("labeling.show_import", job_id=job_id)


@bp.route("/imports/<int:job_id>")
@admin_required
def show_import(job_id):
    found = import_jobs.one_import(data_dir(), job_id)
    if found is None:
        abort(404, description=f"There is no import #{job_id}.")
    return render_template("label/import.html", **found)


# ---- from a classified picture ------------------------------------------------------------

@bp.route("/from-classify", methods=["POST"])
@admin_required
def add_classified():
    sha = request.form.get("sha256", "")
    try:
        label = label_field()
        added = get_dataset().add_image(uploads.stashed(data_dir(), sha), label=label,
                                        source="classify", name=request.form.get("name") or None,
                                        actor=ACTOR)
    except (UploadRefused, StoreError) as e:
        return _classify_again(f"That picture cannot join the dataset: {str(e).rstrip('.')}.")
    if added.status == "rejected":
        return _classify_again(f"That picture cannot join the dataset: {added.reason}.")
    uploads.forget_stashed(data_dir(), sha)
    where = f"class {label!r}" if label else "the unlabeled images"
    if added.status == "duplicate":
        flash(f"The dataset has that picture already (image #{added.image_id}).")
    else:
        flash(f"Added the picture to {where} (image #{added.image_id}).")
    return back("classify.index")


def _classify_again(error):
    """Answer a refused "add to the dataset" on the classify page, whose form is ready again."""
    return render_template("classify/index.html", model=get_model(), error=error), 400
