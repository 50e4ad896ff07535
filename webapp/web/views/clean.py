"""The cleaner: top losses, near-duplicates, suspected label errors, outliers, the map, decisions,
undo, history."""
from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from webapp.cleaning import crossval, dataset_map as maps, decisions, lists as cleaning
from webapp.dataset.store import StoreError
from webapp.jobs import runner as jobs
from webapp.model import registry
from webapp.web.auth import admin_required, safe_next
from webapp.web.resources import data_dir, get_dataset

bp = Blueprint("cleaning", __name__, url_prefix="/clean")
PAIR_SIMILARITY = {
    cleaning.near_duplicates.HASH: "perceptual-hash similarity (the share of 64 bits that agree)",
    cleaning.near_duplicates.COSINE: "cosine similarity of the embeddings"}
PER_PAGE = {"losses": 48, "pairs": 20, "issues": 36, "outliers": 48, "history": 50}
MAX_LIMIT = 1000



def _cleaner():
    """Return the lists of the version asked for (?version=, from a report), else the active one."""
    version = request.args.get("version")
    if version:
        registry.version_record(data_dir(), version)  # only registered versions name a folder
    return cleaning.Cleaner(get_dataset(), version or registry.active_version(data_dir()))


def _int_arg(name, default, lo, hi):
    raw = request.args.get(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        abort(400, description=f"{name} must be a whole number, not {raw!r}")
    if not lo <= value <= hi:
        abort(400, description=f"{name} must be between {lo} and {hi}")
    return value


def _threshold(cleaner):
    """Return the ?threshold= asked for, else the default of the version's pairing method."""
    try:
        return cleaner.pair_threshold(request.args.get("threshold"))
    except ValueError:
        abort(400, description="threshold must be a number above 0 and at most 1")


def _scored_or_409(cleaner):
    if not cleaner.scored:
        abort(409, description="the active model has not scored the images yet: rescore first"
              if cleaner.version else "there is no active model yet: train one first")
    return cleaner


def _render(template, cleaner, **kw):
    return render_template(template, cleaner=cleaner, status=cleaning.status(cleaner),
                           job=jobs.running(data_dir(), "score"),
                           classes=get_dataset().class_names(), **kw)


def _losses_args():
    a = request.args
    split = a.get("split") or ("valid" if a.get("actual") and a.get("predicted") else "both")
    if split not in cleaning.SPLITS:
        abort(400, description=f"split must be one of {', '.join(cleaning.SPLITS)}")
    return {"label": a.get("label") or None, "split": split, "actual": a.get("actual") or None,
            "predicted": a.get("predicted") or None}


def _list_args(args):
    """The list arguments plus the version asked for, as the page's links carry them on."""
    return {**args, "version": request.args.get("version") or None}


@bp.route("/")
@admin_required
def index():
    cleaner, args = _cleaner(), _losses_args()
    offset = _int_arg("offset", 0, 0, 10**9)
    page = (cleaner.top_losses(**args, offset=offset, limit=PER_PAGE["losses"])
            if cleaner.scored else None)
    return _render("clean/index.html", cleaner, page=page, args=args, link_args=_list_args(args))


@bp.route("/top-losses.json")
@admin_required
def top_losses_json():
    cleaner, args = _scored_or_409(_cleaner()), _losses_args()
    page = cleaner.top_losses(**args, offset=_int_arg("offset", 0, 0, 10**9),
                              limit=_int_arg("limit", 100, 1, MAX_LIMIT))
    return jsonify(version=cleaner.version, total=page.total, items=page.items, ranked_by="loss")


@bp.route("/duplicates")
@admin_required
def duplicates():
    cleaner = _cleaner()
    threshold = _threshold(cleaner)
    offset = _int_arg("offset", 0, 0, 10**9)
    page = cleaner.duplicates(threshold, offset, PER_PAGE["pairs"]) if cleaner.scored else None
    return _render("clean/duplicates.html", cleaner, page=page, threshold=threshold,
                   link_args=_list_args({"threshold": threshold}))


@bp.route("/duplicates.json")
@admin_required
def duplicates_json():
    cleaner = _scored_or_409(_cleaner())
    threshold = _threshold(cleaner)
    page = cleaner.duplicates(threshold, _int_arg("offset", 0, 0, 10**9),
                              _int_arg("limit", 100, 1, MAX_LIMIT))
    return jsonify(version=cleaner.version, total=page.total, items=page.items,
                   threshold=threshold, ranked_by=PAIR_SIMILARITY[cleaner.pair_method])


@bp.route("/label-issues")
@admin_required
def label_issues():
    cleaner = _cleaner()
    offset = _int_arg("offset", 0, 0, 10**9)
    page = cleaner.label_issues(offset, PER_PAGE["issues"]) if cleaner.scored else None
    return _render("clean/label_issues.html", cleaner, page=page, link_args=_list_args({}))


@bp.route("/label-issues.json")
@admin_required
def label_issues_json():
    cleaner = _scored_or_409(_cleaner())
    page = cleaner.label_issues(_int_arg("offset", 0, 0, 10**9),
                                _int_arg("limit", 100, 1, MAX_LIMIT))
    sources = "; ".join(f"{name} for {n}" for name, n in page.sources.items())
    return jsonify(version=cleaner.version, total=page.total, items=page.items,
                   ranked_by="label quality (self-confidence), lowest first, on out-of-sample "
                             f"probabilities from {sources or 'no source'}",
                   sources=[{"source": name, "images": n} for name, n in page.sources.items()])


@bp.route("/outliers")
@admin_required
def outliers():
    cleaner = _cleaner()
    offset = _int_arg("offset", 0, 0, 10**9)
    page = cleaner.outliers(offset, PER_PAGE["outliers"]) if cleaner.scored else None
    return _render("clean/outliers.html", cleaner, page=page, link_args=_list_args({}))


@bp.route("/outliers.json")
@admin_required
def outliers_json():
    cleaner = _scored_or_409(_cleaner())
    page = cleaner.outliers(_int_arg("offset", 0, 0, 10**9), _int_arg("limit", 100, 1, MAX_LIMIT))
    if page is None:
        abort(409, description="these scores have no outlier scores yet: rescore first")
    return jsonify(version=cleaner.version, total=page.total, items=page.items,
                   ranked_by=f"outlier score ({cleaning.embedding_models.OUTLIER_METHOD}), "
                             "highest first")


@bp.route("/map")
@admin_required
def dataset_map():
    cleaner = _cleaner()
    return _render("clean/map.html", cleaner, drawn=maps.drawn(cleaner), link_args=_list_args({}))


@bp.route("/map.json")
@admin_required
def map_json():
    cleaner = _scored_or_409(_cleaner())
    points = maps.map_points(cleaner, _threshold(cleaner))
    if points is None:
        abort(409, description="these scores have no map yet: rescore first")
    return jsonify(points)


def _next_url():
    return safe_next(request.form.get("next"), url_for(".index"))


def _answer(message, error=False, **extra):
    """Answer a POST: JSON for the page's script (with `extra`), else flash and go back."""
    if request.accept_mimetypes.best == "application/json":
        return (jsonify({"error": message} if error else {"message": message, **extra}),
                400 if error else 200)
    flash(message, "error" if error else "message")
    return redirect(_next_url()), 303


@bp.route("/decide", methods=["POST"])
@admin_required
def decide():
    f = request.form
    try:
        decision = decisions.decide(get_dataset(), f.get("action"), f.getlist("image_id"),
                                    label=f.get("label"), other_id=f.get("other_id"))
    except StoreError as e:
        return _answer(str(e), error=True)
    return _answer(decision.message, changed=decision.changed)


@bp.route("/undo-last", methods=["POST"])
@admin_required
def undo_last():
    try:
        message = decisions.undo_last(get_dataset())
    except StoreError as e:
        return _answer(str(e), error=True)
    return _answer(message or "There is nothing to undo.", error=message is None)


@bp.route("/history")
@admin_required
def history():
    dataset = get_dataset()
    offset = _int_arg("offset", 0, 0, 10**9)
    return render_template("clean/history.html",
                           events=dataset.history(PER_PAGE["history"], offset),
                           kept=decisions.keep_history(dataset.conn), offset=offset,
                           per_page=PER_PAGE["history"])


@bp.route("/history/<int:event_id>/undo", methods=["POST"])
@admin_required
def undo_event(event_id):
    try:
        undone = get_dataset().undo(event_id)
    except StoreError as e:
        return _answer(str(e), error=True)
    return _answer(f"Undone: {undone.text()} (event #{event_id}).")


@bp.route("/kept/<int:batch>/undo", methods=["POST"])
@admin_required
def undo_keep(batch):
    try:
        decisions.undo_keep(get_dataset().conn, batch)
    except StoreError as e:
        return _answer(str(e), error=True)
    return _answer("Undone: the keep decision; those images can be suggested again.")


@bp.route("/rescore", methods=["POST"])
@admin_required
def rescore():
    version = registry.active_version(data_dir())
    if version is None:
        return _answer("There is no active model yet: train one first.", error=True)
    raw = request.form.get("cv_folds") or "0"
    folds = int(raw) if raw.isdigit() else -1
    if folds != 0 and not crossval.MIN_FOLDS <= folds <= crossval.MAX_FOLDS:
        return _answer(f"Folds must be 0 (no cross-validation) or {crossval.MIN_FOLDS} to "
                       f"{crossval.MAX_FOLDS}.", error=True)
    try:
        job_id = jobs.start(data_dir(), "score", {"version": version, "cv_folds": folds})
    except jobs.JobRefused as e:
        return _answer(str(e), error=True)
    return _answer(f"Rescoring with {version} started (job #{job_id}); this page follows it.")
