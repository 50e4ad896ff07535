"""The JSON API keeps to its OpenAPI document: schemathesis sends what the document allows."""
import socket

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import PASSWORD, make_app
from webapp.model import node_tokens

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def site(tmp_path_factory, trained_dir):
    """A served trained model, scored pictures for the cleaner, and an admin's session cookie."""
    import shutil

    src, _, _ = trained_dir
    data_dir = tmp_path_factory.mktemp("openapi") / "data"
    shutil.copytree(src, data_dir)
    app = make_app(data_dir, LOAD_MODEL=True, WTF_CSRF_ENABLED=False)
    client = app.test_client()
    assert client.post("/login", data={"password": PASSWORD}).status_code == 302
    cookie = client.get_cookie("session").value
    _, token = node_tokens.create(data_dir, "openapi")
    return app, {"Cookie": f"session={cookie}", "Authorization": f"Bearer {token}"}


def test_the_document_is_served_and_valid(site):
    app, _ = site
    doc = app.test_client().get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.") and "/classify-url" in doc["paths"]
    schemathesis.openapi.from_dict(doc)  # refuses a document that is not valid OpenAPI


@pytest.fixture
def no_dns(monkeypatch):
    """No name is resolved: generated addresses are refused without touching the network."""
    def refuse(*a, **kw):
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_every_answer_matches_the_document(site, no_dns):
    """Each operation, with an admin's session and a node token: no 500s, documented statuses,
    content and shapes."""
    app, credentials = site
    api = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    checked = []
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def answers_as_documented(case):
            case.call_and_validate(headers=credentials, checks=CHECKS)

        answers_as_documented()
        checked.append(operation.label)
    assert len(checked) == len(app.test_client().get("/api/openapi.json").get_json()["paths"])
