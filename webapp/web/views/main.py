"""Operations endpoints: liveness and readiness probes, and the API's OpenAPI document."""
from flask import Blueprint, current_app

from webapp.web import openapi
from webapp.web.resources import get_model

bp = Blueprint("main", __name__)
# The API's document: the admin node's (a serving node answers only the public contracts).
docs = Blueprint("docs", __name__)


@bp.route("/healthz")
def healthz():
    return {"status": "alive"}


@bp.route("/readyz")
def readyz():
    model, role = get_model(), current_app.config["ROLE"]
    if not model.ready:
        return {"error": model.error or "no model is active yet", "role": role,
                **model.describe()}, 503
    return {"status": "ready", "role": role, "model": model.version, **model.describe()}


@docs.route("/api/openapi.json")
def openapi_document():
    """The OpenAPI 3 document of the JSON endpoints."""
    return openapi.document()
