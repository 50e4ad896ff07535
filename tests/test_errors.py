"""Errors, one way: every domain refusal has its HTTP status, and answers as JSON or as a page."""
import importlib
import inspect
import pkgutil

import pytest

import webapp
from tests.conftest import make_app
from webapp.core.fetch import FetchError
from webapp.dataset.store import StoreError
from webapp.jobs.runner import JobRefused
from webapp.model.registry import ModelError
from webapp.model.serving import NoModel
from webapp.web import errors

# Exceptions that never reach a request: they stop a job or a fit from inside, they belong to
# a terminal command (backup and restore run from the CLI only), or they are raised while a
# version's serving spec is built at export (SpecRefused) or by a spec that export would have
# refused (SpecError: a bug, rightly a 500), or a serving node's follower thread meets them
# while it checks its model source (SourceError, Refused: /readyz reports them).
INTERNAL = {"Cancelled", "Stopped", "TrainingCancelled", "BackupError", "SpecRefused", "SpecError",
            "SourceError", "Refused"}


def domain_errors():
    """Every exception class the project defines outside the web layer."""
    found = {}
    for info in pkgutil.walk_packages(webapp.__path__, "webapp."):
        if info.name.startswith(("webapp.web", "webapp.app")):
            continue
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__ == info.name:
                found[name] = cls
    return found


def test_every_domain_error_has_an_http_status():
    mapped = [cls for cls, _ in errors.REFUSALS] + [FetchError]
    unmapped = [name for name, cls in domain_errors().items()
                if name not in INTERNAL and not issubclass(cls, tuple(mapped))]
    assert unmapped == [], f"give these a status in web/errors.py REFUSALS: {unmapped}"


@pytest.fixture
def raising(tmp_path):
    """An app with routes that raise a given domain error, as a view would let it propagate."""
    app = make_app(tmp_path / "data", WTF_CSRF_ENABLED=False)
    raised = {}

    def boom():
        raise raised["error"]

    app.add_url_rule("/boom", "boom", boom, methods=["GET", "POST"])
    app.add_url_rule("/boom.json", "boom_json", boom, methods=["GET", "POST"])
    client = app.test_client()

    def call(error, path="/boom", method="get"):
        raised["error"] = error
        return getattr(client, method)(path)

    return call


@pytest.mark.parametrize("error, status", [
    (StoreError("there is no class 'x'"), 400),
    (ModelError("there is no model version 'v'"), 404),
    (JobRefused("A train job (#3) is running", 3), 409),
    (NoModel("no model is active yet"), 503),
])
def test_a_refusal_answers_json_with_its_status_and_words(raising, error, status):
    r = raising(error, "/boom.json")
    assert r.status_code == status
    assert r.get_json() == {"error": str(error)}


@pytest.mark.parametrize("kind, status", [("too_large", 413), ("timeout", 504),
                                          ("upstream", 502), ("blocked", 400)])
def test_a_failed_fetch_answers_with_its_status(raising, kind, status):
    r = raising(FetchError(kind, "details for the log only: 10.0.0.7"), "/boom.json")
    assert r.status_code == status
    assert "10.0.0.7" not in r.get_json()["error"]  # a stranger gets no internal details


def test_a_busy_server_says_so_and_when_to_come_back(raising):
    r = raising(FetchError("busy", "too many fetches at once; try again shortly"), "/boom.json")
    assert r.status_code == 503 and r.headers["Retry-After"]
    assert r.get_json() == {"error": "too many fetches at once; try again shortly"}


def test_a_refused_change_says_nothing_was_changed(raising):
    r = raising(StoreError("there is no class 'x'"), method="post")
    page = r.get_data(as_text=True)
    assert r.status_code == 400
    assert "That was not done" in page and "There is no class &#39;x&#39;." in page
    assert "Nothing was changed" in page


def test_a_missing_page_is_an_error_page_not_a_refusal(raising):
    r = raising(ModelError("there is no model version 'v'"))
    page = r.get_data(as_text=True)
    assert r.status_code == 404 and "Error 404" in page and "Nothing was changed" not in page
