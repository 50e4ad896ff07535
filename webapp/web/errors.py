"""Error pages: HTML for pages, {"error": ...} JSON for the API."""
from flask import render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

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


def wants_json():
    """Tell whether the client speaks the JSON API."""
    p = request.path
    return p.startswith("/api/") or p == "/classify-url" or p.endswith(".json")


def _message(e):
    if isinstance(e, CSRFError):
        return f"The form's security token is missing or expired ({e.description}). Reload the page and try again."
    if isinstance(e, RateLimitExceeded):
        return e.description if e.description and "per" not in e.description else MESSAGES[429]
    if isinstance(e, InternalServerError) or not isinstance(e, HTTPException):
        return MESSAGES[500]
    default = type(e).description
    return e.description if e.description and e.description != default else MESSAGES.get(e.code, e.name)


def handle(e):
    """Render any HTTP error as JSON or as a page."""
    code = e.code if isinstance(e, HTTPException) and e.code else 500
    msg = _message(e)
    if wants_json():
        return {"error": msg}, code
    return render_template("error.html", code=code, message=msg), code


def init_app(app):
    """Register the error handlers."""
    app.register_error_handler(HTTPException, handle)

    def unexpected(e):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return handle(InternalServerError(original_exception=e))

    app.register_error_handler(Exception, unexpected)
