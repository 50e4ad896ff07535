"""Operations endpoints: liveness and readiness probes."""
from flask import Blueprint

from webapp.web.resources import get_model

bp = Blueprint("main", __name__)


@bp.route("/healthz")
def healthz():
    return {"status": "alive"}


@bp.route("/readyz")
def readyz():
    model = get_model()
    if not model.ready:
        return {"error": model.error or "no model is active yet"}, 503
    return {"status": "ready", "model": model.version}
