"""Public classification: the upload page, its result, and the JSON API."""
from flask import Blueprint, current_app, render_template, request

from webapp.core import fetch, images
from webapp.ingest import uploads
from webapp.model import serving
from webapp.web import errors, limits, metrics
from webapp.web.auth import is_admin
from webapp.web.resources import csrf, data_dir, get_dataset, get_model

bp = Blueprint("classify", __name__)
MAX_SHOWN = 10


def _upload_bytes():
    """Return the uploaded image: multipart field `file`, or the raw request body."""
    if "file" in request.files:
        return request.files["file"].read()
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return b""
    return request.get_data()


def _fetch_limits():
    """Return the web's fetch limits: the FETCH_* settings, FETCH_CONCURRENCY at a time."""
    cfg = current_app.config
    return fetch.Limits.from_settings(cfg, concurrency=cfg["FETCH_CONCURRENCY"])


def _classify(classifier, data):
    """Classify untrusted bytes under the pixel cap, and count the prediction by its top class."""
    ranked, image = serving.classify_bytes(classifier, data, current_app.config["MAX_PIXELS"])
    metrics.record_prediction(ranked[0][0])
    return ranked, image


@bp.route("/")
def index():
    return render_template("classify/index.html", model=get_model())


@bp.route("/classify", methods=["POST"])
@limits.classifications
def classify_page():
    model = get_model()
    url = request.form.get("url", "").strip()
    try:
        data = fetch.fetch(url, _fetch_limits()) if url else _upload_bytes()
        ranked, image = _classify(model.classifier, data)
    except serving.NoModel as e:
        return render_template("classify/index.html", model=model, error=str(e)), 503
    except fetch.FetchError as e:
        metrics.record_fetch_failure(e.kind)
        detail = errors.fetch_error_text(e)
        page = render_template("classify/index.html", model=model, url=url,
                               error=f"That address cannot be used: {detail}.")
        return page, errors.FETCH_STATUS[e.kind]
    except images.ImageRejected as e:
        what = "The picture at that address" if url else "That file"
        return render_template("classify/index.html", model=model, url=url,
                               error=f"{what} cannot be classified: {e}."), 400
    return render_template("classify/result.html", model=model, ranked=ranked[:MAX_SHOWN],
                           n_classes=len(ranked), thumbnail=serving.thumbnail_data_url(image),
                           **(_to_dataset_form(data, url, ranked) if is_admin() else {}))


def _to_dataset_form(data, url, ranked):
    """What the result page needs to offer an admin to add the picture to the dataset."""
    upload = request.files.get("file")
    classes = get_dataset().class_names()
    return {"stash": uploads.stash(data_dir(), data),
            "picture_name": url or (upload.filename if upload else None),
            "choices": classes + sorted({label for label, _ in ranked} - set(classes))}


@bp.route("/api/classify", methods=["POST"])
@limits.classifications
@csrf.exempt
def classify_api():
    model = get_model()
    classifier = model.classifier  # one reference: a swap mid-request cannot mix versions
    ranked, _ = _classify(classifier, _upload_bytes())
    return serving.api_answer(ranked, classifier.version)


@bp.route("/classify-url")
@limits.classifications
def classify_url():
    url = request.args.get("url", "").strip()
    if not url:
        return {"error": "give the image's address as ?url=http(s)://…"}, 400
    classifier = get_model().classifier
    if classifier is None:
        raise serving.NoModel(serving.NO_MODEL)  # before fetching anything
    data = fetch.fetch(url, _fetch_limits())
    ranked, _ = _classify(classifier, data)
    return serving.api_answer(ranked, classifier.version)
