"""Error answers, one way: HTML for pages, {"error": ...} JSON for the API.

Domain errors carry no HTTP: `REFUSALS` says which status each class of them gets, and one
handler per class answers it. A view lets a domain error propagate unless it re-renders its own
form with the error beside what was typed (the retrain form, the classify page, the label
forms).
"""
from flask import current_app, render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound
from werkzeug.routing import IntegerConverter

from webapp.cleaning.crossval import CrossValidationRefused
from webapp.cleaning.scoring import ScoringError
from webapp.core.fetch import FetchError
from webapp.core.images import ImageRejected
from webapp.dataset.store import StoreError
from webapp.ingest.uploads import UploadRefused
from webapp.jobs.runner import JobRefused
from webapp.model.node_tokens import TokenRefused
from webapp.model.notebook_import import ImportRefused
from webapp.model.registry import ModelError
from webapp.model.report import NoPlot
from webapp.model.serving import NoModel
from webapp.model.training import TrainingRefused
from webapp.runtime.bundle import BundleError
from webapp.web import metrics
from webapp.web.auth import is_admin

MESSAGES = {
    400: "The request was not understood.",
    401: "Log in first.",
    403: "You may not do that.",
    404: "There is nothing here.",
    405: "That method is not allowed here.",
    413: "The upload is too large.",
    429: "Too many requests; slow down and try again.",
    500: "Something went wrong on our side; it has been logged.",
    503: "Not ready yet.",
}
# A fetched URL's failure, by kind: the client's address (400, 413), the upstream (502, 504), or
# all of this process's fetch slots taken (503, with when to try again).
FETCH_STATUS = {"bad_url": 400, "blocked": 400, "too_large": 413, "timeout": 504,
                "http_status": 502, "upstream": 502, "busy": 503}
BUSY_RETRY_AFTER = "5"  # seconds: most fetches finish well within it
# Each domain refusal's status; the first class that matches wins (subclasses first).
REFUSALS = [
    (StoreError, 400),  # and DecisionRefused
    (UploadRefused, 400),
    (ImageRejected, 400),
    (TrainingRefused, 400),
    (CrossValidationRefused, 400),
    (ImportRefused, 400),
    (TokenRefused, 400),
    (ModelError, 404),
    (NoPlot, 404),
    (JobRefused, 409),
    (ScoringError, 409),
    (NoModel, 503),
    (BundleError, 503),  # a serving bundle that cannot serve here: the model is unavailable
]


def wants_json():
    """Tell whether the client speaks the JSON API."""
    p = request.path
    return (p.startswith(("/api/", "/registry/")) or p == "/classify-url"
            or p.endswith(".json"))


def sentence(text):
    """Return text as a sentence: capitalised, with a full stop."""
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", "!")) else ".")


def _message(e):
    if isinstance(e, CSRFError):
        return (f"The form's security token is missing or expired ({e.description}). "
                "Reload the page and try again.")
    if isinstance(e, RateLimitExceeded):
        return e.description if e.description and "per" not in e.description else MESSAGES[429]
    if isinstance(e, InternalServerError) or not isinstance(e, HTTPException):
        return MESSAGES[500]
    default = type(e).description
    return (e.description if e.description and e.description != default
            else MESSAGES.get(e.code, e.name))


def answer(code, message, refused=False):
    """Answer an error as JSON for the API, or as a page.

    A refused change (a POST the domain turned down) says so on its page: nothing was changed.
    """
    if wants_json():
        return {"error": message}, code
    refused = refused and request.method not in ("GET", "HEAD")
    return render_template("error.html", code=code, message=message, refused=refused), code


def handle(e):
    """Render any HTTP error as JSON or as a page."""
    code = e.code if isinstance(e, HTTPException) and e.code else 500
    return answer(code, _message(e))


def refused(e):
    """Answer a domain error with its status and its own words; nothing was changed."""
    code = next(status for cls, status in REFUSALS if isinstance(e, cls))
    if isinstance(e, ImageRejected):
        return answer(code, f"not a usable image: {e}", refused=True)
    return answer(code, str(e) if wants_json() else sentence(str(e)), refused=code < 500)


# What anyone but an admin reads of a failed fetch: its details (a resolved internal address, an
# upstream's status) would map the server's network for a stranger. Kinds not here: the client's
# own mistake or a wait, which reveal nothing.
PUBLIC_FETCH_TEXT = {"blocked": "the address cannot be fetched from here",
                     "too_large": "the image at the address is too large",
                     "timeout": "the address did not answer in time",
                     "http_status": "the address did not give an image",
                     "upstream": "the download failed"}
OWN_WORDS_FETCH = ("bad_url", "busy")


def fetch_error_text(e):
    """Return a fetch failure's words for this client: details for an admin, generic else."""
    if is_admin() or e.kind in OWN_WORDS_FETCH:
        return str(e)
    current_app.logger.info("fetch refused (%s) for %s: %s", e.kind, request.remote_addr, e)
    return PUBLIC_FETCH_TEXT.get(e.kind, "the address could not be fetched")


def fetch_failed(e):
    """Answer a URL the server could not fetch, and count it by kind."""
    metrics.record_fetch_failure(e.kind)
    detail = fetch_error_text(e)
    body, code = answer(FETCH_STATUS.get(e.kind, 502), detail if wants_json() else
                        sentence(f"that address cannot be used: {detail}"), refused=True)
    return body, code, ({"Retry-After": BUSY_RETRY_AFTER} if e.kind == "busy" else {})


class StoreId(IntegerConverter):
    """An <int:...> in a URL that SQLite can hold (64-bit): a larger one matches no route."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2 ** 63 - 1)
        super().__init__(map, *args, **kwargs)


def init_app(app):
    """Register the error handlers: HTTP errors, domain refusals, anything unexpected."""
    # Before the blueprints: a rule takes its converter when it is added. An id past the store
    # is then a 404 on every route, before any view (or a session) sees it.
    app.url_map.converters["int"] = StoreId
    app.register_error_handler(HTTPException, handle)
    for cls, _ in REFUSALS:
        app.register_error_handler(cls, refused)
    app.register_error_handler(FetchError, fetch_failed)

    def unexpected(e):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return handle(InternalServerError(original_exception=e))

    app.register_error_handler(Exception, unexpected)

    def out_of_range(e):
        # SQLite's integers are 64-bit: a larger number in a query or a form names nothing stored.
        return handle(NotFound()) if "SQLite INTEGER" in str(e) else unexpected(e)

    app.register_error_handler(OverflowError, out_of_range)
