"""The model registry over HTTP, for serving nodes holding a node token (and for nothing else).

Every route here answers JSON and wants `Authorization: Bearer <node token>` first: an admin's
login session does not open it, and a token opens nothing outside it.
"""
from flask import Blueprint, Response, request, send_file

from webapp.model import node_tokens, published
from webapp.web.limits import limiter
from webapp.web.resources import csrf, data_dir

bp = Blueprint("registry", __name__, url_prefix="/registry")
csrf.exempt(bp)  # read-only GETs for machines with a token, not forms
limiter.exempt(bp)  # nodes poll it; the classify limits are for the public
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="winnow-registry"'}


def _bearer_token():
    """Return the token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


@bp.before_request
def require_node_token():
    """Answer 401 unless the request carries a live node token; before anything else."""
    token = _bearer_token()
    if token is None:
        return {"error": "send a node token: Authorization: Bearer <token>"}, 401, CHALLENGE
    if node_tokens.check(data_dir(), token) is None:
        return {"error": "that node token is unknown or has been revoked"}, 401, CHALLENGE
    return None


@bp.route("/active")
def active():
    """The version nodes should serve and its bundle.json's sha256, or why there is none."""
    return published.active(data_dir()), 200, {"Cache-Control": "no-store"}


@bp.route("/<version>/bundle")
def manifest(version):
    """A servable version's bundle.json, exactly as recorded."""
    try:
        data = published.manifest(data_dir(), version)
    except published.NotPublished as e:
        return {"error": str(e)}, 404
    except published.BundleMismatch as e:
        return {"error": str(e)}, 409
    return Response(data, mimetype="application/json")


@bp.route("/<version>/bundle/<path:name>")
def bundle_file(version, name):
    """One file that a servable version's bundle.json lists, streamed."""
    try:
        path = published.bundle_file(data_dir(), version, name)
    except published.NotPublished as e:
        return {"error": str(e)}, 404
    except published.BundleMismatch as e:
        return {"error": str(e)}, 409
    return send_file(path, mimetype="application/octet-stream")


@bp.route("/", defaults={"rest": ""})
@bp.route("/<path:rest>")
def unknown(rest):
    """Anything else under /registry: a JSON 404, after the token check like the rest."""
    return {"error": "the registry has no such address"}, 404
