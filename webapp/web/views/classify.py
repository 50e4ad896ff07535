"""Public classification: the upload page, its result, and the JSON API."""
from flask import Blueprint, current_app, render_template, request

from webapp.core import fetch, images
from webapp.web import metrics
from webapp.model import serving
from webapp.ingest import uploads
from webapp.web.auth import is_admin
from webapp.web.resources import csrf, get_dataset, get_model

bp = Blueprint("classify", __name__)
MAX_SHOWN = 10
FETCH_STATUS = {"bad_url": 400, "blocked": 400, "too_large": 413, "timeout": 504,
                "http_status": 502, "upstream": 502}


def _upload_bytes():
    """Return the uploaded image: multipart field `file`, or the raw request body."""
    if "file" in request.files:
        return request.files["file"].read()
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return b""
    return request.get_data()


@bp.route("/")
def index():
    return render_template("classify/index.html", model=get_model())


@bp.route("/classify", methods=["POST"])
def classify_page():
    model = get_model()
    url = request.form.get("url", "").strip()
    try:
        data = fetch.fetch(url, _fetch_limits()) if url else _upload_bytes()
        ranked, image = serving.classify_bytes(model.classifier, data,
                                               current_app.config["MAX_PIXELS"])
    except serving.NoModel as e:
        return render_template("classify/index.html", model=model, error=str(e)), 503
    except fetch.FetchError as e:
        metrics.record_fetch_failure(e.kind)
        return render_template("classify/index.html", model=model, url=url,
                               error=f"That address cannot be used: {e}."), FETCH_STATUS[e.kind]
    except images.ImageRejected as e:
        return render_template("classify/index.html", model=model, url=url,
                               error=f"That file cannot be classified: {e}."), 400
    return render_template("classify/result.html", model=model, ranked=ranked[:MAX_SHOWN],
                           n_classes=len(ranked), thumbnail=serving.thumbnail_data_url(image),
                           **(_to_dataset_form(data, url, ranked) if is_admin() else {}))


def _to_dataset_form(data, url, ranked):
    """What the result page needs to offer an admin to add the picture to the dataset."""
    upload = request.files.get("file")
    classes = get_dataset().class_names()
    return {"stash": uploads.stash(current_app.config["DATA_DIR"], data),
            "picture_name": url or (upload.filename if upload else None),
            "choices": classes + sorted({label for label, _ in ranked} - set(classes))}


@bp.route("/api/classify", methods=["POST"])
@csrf.exempt
def classify_api():
    model = get_model()
    classifier = model.classifier  # one reference: a swap mid-request cannot mix versions
    try:
        ranked, _ = serving.classify_bytes(classifier, _upload_bytes(),
                                           current_app.config["MAX_PIXELS"])
    except serving.NoModel as e:
        return {"error": str(e)}, 503
    except images.ImageRejected as e:
        return {"error": f"not a usable image: {e}"}, 400
    return serving.api_answer(ranked, classifier.version)


def _fetch_limits():
    cfg = current_app.config
    return fetch.Limits(max_bytes=cfg["FETCH_MAX_BYTES"], deadline=cfg["FETCH_DEADLINE"],
                        allow_nets=fetch.parse_allow_nets(cfg["FETCH_ALLOW_NETS"]))


@bp.route("/classify-url")
def classify_url():
    url = request.args.get("url", "").strip()
    if not url:
        return {"error": "give the image's address as ?url=http(s)://…"}, 400
    classifier = get_model().classifier
    if classifier is None:
        return {"error": serving.NO_MODEL}, 503
    try:
        data = fetch.fetch(url, _fetch_limits())
        ranked, _ = serving.classify_bytes(classifier, data, current_app.config["MAX_PIXELS"])
    except fetch.FetchError as e:
        metrics.record_fetch_failure(e.kind)
        return {"error": str(e)}, FETCH_STATUS[e.kind]
    except images.ImageRejected as e:
        return {"error": f"the URL is not a usable image: {e}"}, 400
    return serving.api_answer(ranked, classifier.version)
