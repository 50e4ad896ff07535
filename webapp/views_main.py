"""Public pages: the home page with the model's status, and the health probes."""
from flask import Blueprint, render_template

from .resources import get_model

bp = Blueprint("main", __name__)


@bp.route("/")
def index():
    model = get_model()
    return render_template("main/index.html", model=model)


@bp.route("/healthz")
def healthz():
    return {"status": "alive"}


@bp.route("/readyz")
def readyz():
    model = get_model()
    if not model.ready:
        return {"error": model.error or "no model is active yet"}, 503
    return {"status": "ready", "model": model.version}
