"""Operations endpoints: liveness and readiness probes, and the API's OpenAPI document."""
from flask import Blueprint

from webapp.web import openapi
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
    served = model.classifier
    return {"status": "ready", "model": model.version, "runtime": served.runtime,
            "precision": served.precision, "note": served.note}


@bp.route("/api/openapi.json")
def openapi_document():
    """The OpenAPI 3 document of the JSON endpoints."""
    return openapi.document()
