"""Admin: retrain from cleaned.csv, watch it, read its report, switch and download versions."""
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from werkzeug.routing import BuildError

from webapp.cleaning import scoring
from webapp.dataset import archive
from webapp.jobs import runner as jobs
from webapp.model import (
    estimate as run_estimate,
    node_tokens,
    notebook_import as model_import,
    registry,
    report,
    training,
)
from webapp.web import forms
from webapp.web.auth import admin_required, safe_next
from webapp.web.resources import data_dir, get_dataset, get_model, upload_cap

bp = Blueprint("admin", __name__, url_prefix="/admin")



def _index(form=None, error=None, refused_by=None, status=200, node=None):
    folder = data_dir()
    dataset = get_dataset()
    active = registry.active_version(folder)
    if form is not None:
        settings_from = {"typed": True}  # a refused form comes back as it was typed
    elif request.args.get("settings") == "defaults":
        form, settings_from = forms.form_defaults(), {}
    else:
        form, settings_from = forms.remembered_form(folder)
    versions = registry.versions(folder, include_pending=True)  # pending: shown, not activatable
    return render_template(
        "admin/index.html", counts=dataset.class_counts(), unlabeled=dataset.unlabeled_count(),
        versions=versions, active=active,
        files={v["version"]: report.available_files(folder, v["version"]) for v in versions},
        previous=registry.previous_version(folder),
        changes=report.changes_since(folder, active) if active else None,
        problems=report.problems(folder, active) if active else [],
        running=jobs.running(folder, "train"),
        last_training=next(iter(jobs.recent(folder, kind="train", limit=1)), None),
        form=form, settings_from=settings_from, estimate=_estimate(form), archs=training.ARCHS,
        error=error, refused_by=refused_by, events=dataset.history(limit=10),
        tokens=node_tokens.listing(folder), node=node or {},
    ), status


@bp.route("/")
@admin_required
def index():
    return _index()


def _estimate(form):
    """Return the form's run's estimate as JSON, or {"error": why the form cannot run}."""
    try:
        params = forms.params_from_form(form, forms.recipe_settings(current_app.config))
    except training.TrainingRefused as e:
        return {"error": f"No estimate: {e}."}
    return run_estimate.for_data_dir(data_dir(), training.TrainOptions.from_params(params),
                                     get_dataset().class_counts()).as_json()


@bp.route("/estimate.json")
@admin_required
def estimate():
    """What the retrain form's run would cost here, phase by phase, and what that rests on."""
    answer = _estimate({**forms.form_defaults(), **request.args.to_dict()})
    return answer, 400 if "error" in answer else 200


@bp.route("/train", methods=["POST"])
@admin_required
def train():
    """Start a training job from the retrain form; one at a time."""
    cfg = current_app.config
    form = {**forms.form_defaults(), **request.form.to_dict(),
            "activate": "activate" in request.form}
    try:
        params = forms.params_from_form(request.form, forms.recipe_settings(cfg))
        training.preflight(data_dir(), training.TrainOptions.from_params(params))
        job_id = jobs.start(data_dir(), "train", params)
    except training.TrainingRefused as e:
        return _index(form, error=f"Not started: {e}.", status=400)
    except jobs.JobRefused as e:
        return _index(form, error=str(e), refused_by=e.running_id, status=409)
    flash(f"Training started as job #{job_id}; it runs in its own process.")
    return redirect(url_for("admin.index", _anchor="retrain")), 303


@bp.route("/models/<version>")
@admin_required
def model(version):
    info = {**report.version_report(data_dir(), version),
            "scores": scoring.scores_meta(data_dir(), version)}
    served = get_model().classifier
    return render_template(
        "admin/model.html", version=version, r=info,
        served=served if served is not None and served.version == version else None,
        clean_url=lambda actual, predicted: _clean_url(actual, predicted, version))


def _clean_url(actual, predicted, version):
    """Link to the cleaner filtered to one confusion-matrix cell, with this version's scores."""
    args = {"actual": actual, "predicted": predicted, "version": version}
    try:
        return url_for("cleaning.index", **args)
    except BuildError:  # the cleaning pages are not registered in this app: their documented path
        return "/clean/?" + urlencode(args)


@bp.route("/models/<version>/plots/<name>.svg")
@admin_required
def plot(version, name):
    svg = report.plot_svg(data_dir(), version, name)
    return Response(svg, mimetype="image/svg+xml",
                    headers={"Cache-Control": "private, max-age=86400"})


@bp.route("/models/<version>/activate", methods=["POST"])
@admin_required
def activate(version):
    try:
        registry.activate(data_dir(), version, actor="admin")
    except registry.ModelError as e:
        flash(str(e), "error")
        return redirect(url_for("admin.index")), 303
    flash(f"Model {version} is now active; every worker serves it within about a second.")
    return redirect(safe_next(request.form.get("next"), url_for("admin.index"))), 303


@bp.route("/rollback", methods=["POST"])
@admin_required
def rollback():
    try:
        version = registry.roll_back(data_dir(), actor="admin")
    except registry.ModelError as e:
        flash(str(e), "error")
    else:
        flash(f"Rolled back: model {version} is active again; every worker serves it within "
              "about a second.")
    return redirect(url_for("admin.index", _anchor="versions")), 303


# ---- serving nodes' tokens --------------------------------------------------------------

@bp.route("/node-tokens", methods=["POST"])
@admin_required
def create_node_token():
    """Make a node token and show it on this page only: the store keeps its hash, no cookie it."""
    name = request.form.get("name", "")
    try:
        token_id, token = node_tokens.create(data_dir(), name)
    except node_tokens.TokenRefused as e:
        return _index(node={"name": name, "error": f"Not made: {e}."}, status=400)
    body, status = _index(node={"id": token_id, "name": name.strip(), "token": token})
    return body, status, {"Cache-Control": "no-store"}


@bp.route("/node-tokens/<int:token_id>/revoke", methods=["POST"])
@admin_required
def revoke_node_token(token_id):
    """Revoke a node token; its node is refused from its next request on."""
    if node_tokens.revoke(data_dir(), token_id):
        flash(f"Node token #{token_id} is revoked: a node using it is refused from now on.")
    else:
        flash(f"Node token #{token_id} was revoked already.")
    return redirect(url_for("admin.index", _anchor="nodes")), 303


# ---- downloads ---------------------------------------------------------------------------

FILES = {"export.pkl": "application/octet-stream", "model.onnx": "application/octet-stream",
         "model.int8.onnx": "application/octet-stream", "cleaned.csv": "text/csv"}


@bp.route("/models/<version>/<any('export.pkl', 'model.onnx', 'model.int8.onnx', 'cleaned.csv')"
          ":name>")
@admin_required
def download(version, name):
    registry.version_record(data_dir(), version)  # an unknown version is a 404
    path = report.version_file(data_dir(), version, name)
    if path is None:
        abort(404, description=f"Model {version} has no {name}.")
    return send_file(path, mimetype=FILES[name], as_attachment=True,
                     download_name=f"{version}-{name}")


@bp.route("/models/<version>/dataset.zip")
@admin_required
def version_dataset(version):
    """The images a version was trained on, as class folders."""
    path = report.trained_manifest(data_dir(), version)
    if path is None:
        abort(404, description=f"Model {version} did not keep the cleaned.csv it was trained on.")
    return _zip(training.read_manifest_file(path), f"{version}-dataset.zip")


@bp.route("/dataset.zip")
@admin_required
def dataset_zip():
    """Today's dataset (cleaned.csv as it is now), as class folders."""
    try:
        rows = training.read_manifest(data_dir())
    except training.TrainingRefused as e:
        abort(404, description=str(e))
    return _zip(rows, "dataset.zip")


def _zip(rows, name):
    return send_file(archive.dataset_zip_file(data_dir(), rows), mimetype="application/zip",
                     as_attachment=True, download_name=name)


# ---- bring a notebook model --------------------------------------------------------------

def _import_page(error=None, refused_by=None, status=200):
    return render_template("admin/import.html", error=error, refused_by=refused_by,
                           running=jobs.running(data_dir(), "import")), status


@bp.route("/models/import")
@admin_required
def import_form():
    return _import_page()


@bp.route("/models/import", methods=["POST"])
@admin_required
@upload_cap("MAX_MODEL_UPLOAD_BYTES")
def import_model():
    """Save the upload and start an import job (check, serving bundle, record); show its page."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _import_page(error="Choose an export.pkl file.", status=400)
    folder = data_dir()
    try:
        token = model_import.stage(folder, upload.stream)
    except model_import.ImportRefused as e:
        return _import_page(error=f"Not imported: {e}.", status=400)
    try:
        job_id = jobs.start(folder, "import",
                            model_import.job_params(token, upload.filename, actor="admin"))
    except jobs.JobRefused as e:
        model_import.discard(folder, token)
        return _import_page(error=f"Not started: {e}", refused_by=e.running_id, status=409)
    except BaseException:
        model_import.discard(folder, token)
        raise
    flash(f"Importing {upload.filename} as job #{job_id}: it is checked in a sandboxed process "
          "and given a serving bundle, then recorded as a new version.")
    return redirect(url_for("jobs.show", job_id=job_id)), 303
