"""Every response forbids framing and inline code, and no template brings inline code back."""
import io
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import AdminSession, make_app
from tests.pictures import jpeg, tinted
from webapp.dataset.store import Dataset
from webapp.web.headers import HEADERS

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))
SCRIPTS = sorted((ROOT / "static").rglob("*.js"))
NOT_EXECUTED = {"application/json", "application/ld+json"}  # data blocks: CSP lets them be


class InlineCode(HTMLParser):
    """Collect what a Content-Security-Policy without 'unsafe-inline' would refuse."""

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        where = f"line {self.getpos()[0]} <{tag}>"
        if tag == "style":
            self.found.append(f"{where}: a <style> block")
        if tag == "script" and "src" not in attrs and attrs.get("type") not in NOT_EXECUTED:
            self.found.append(f"{where}: an inline <script>")
        for name, value in attrs.items():
            if name == "style":
                self.found.append(f"{where}: a style attribute")
            elif name.startswith("on"):
                self.found.append(f"{where}: an inline handler {name}=")
            elif name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                    "javascript:"):
                self.found.append(f"{where}: a javascript: URL")


def inline_code(html):
    """Return the inline scripts, styles and handlers in `html`, each described in a line."""
    parser = InlineCode()
    parser.feed(html)
    parser.close()
    return parser.found


def test_the_checker_finds_each_kind_of_inline_code():
    page = """<style>p {}</style><script>alert(1)</script><p style="color: red">
        <button onclick="go()">go</button><a href="javascript:go()">go</a>
        <script src="/static/x.js"></script><script type="application/json" id="d">{}</script>"""
    assert len(inline_code(page)) == 5


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_template_has_inline_script_style_or_handlers(template):
    assert inline_code(template.read_text()) == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_script_evaluates_strings_or_writes_style_text(script):
    # eval-like calls need 'unsafe-eval'; cssText and a style attribute set as text are refused.
    banned = re.compile(r"\beval\(|new Function\b|\.cssText\b|setAttribute\(\s*['\"]style"
                        r"|set(Timeout|Interval)\(\s*['\"`]")
    assert banned.findall(script.read_text()) == []


def assert_protected(response, path):
    """Fail unless `response` carries every security header exactly as the app sets it."""
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, f"{path}: {name}"
    if response.mimetype == "text/html":
        assert inline_code(response.get_data(as_text=True)) == [], path


def plain_get_paths(app):
    """Return the path of every GET route that takes no arguments."""
    return sorted(rule.rule for rule in app.url_map.iter_rules()
                  if "GET" in rule.methods and not rule.arguments)


@pytest.fixture
def served(trained_copy):
    """An app serving the trained model, with an anonymous and an admin client."""
    data_dir, version, _ = trained_copy
    app = make_app(data_dir, LOAD_MODEL=True)
    admin = AdminSession(app.test_client())
    admin.login()
    ds = Dataset(data_dir)
    image_id = ds.labeled()[0]["id"]
    ds.close()
    return app, version, image_id, admin


def test_a_visitor_and_an_admin_get_the_headers_on_every_page(served):
    app, version, image_id, admin = served
    paths = plain_get_paths(app)
    assert {"/", "/admin/", "/login", "/clean/", "/learn/sgd", "/metrics"} <= set(paths)
    with_arguments = [f"/admin/models/{version}", f"/admin/models/{version}/plots/losses.svg",
                      f"/admin/models/{version}/export.pkl", f"/media/{image_id}",
                      "/static/style.css", "/static/learn/sgd.js", "/no-such-page",
                      f"/admin/models/{version}x"]
    for client in (app.test_client(), admin.client):
        for path in paths + with_arguments:
            response = client.get(path)
            assert_protected(response, path)
            assert response.status_code < 500, path


def test_a_refused_post_and_the_classify_result_carry_them_too(served):
    app, _, _, admin = served
    refused = app.test_client().post("/admin/rollback")  # no login, no CSRF token
    assert refused.status_code in (302, 400, 403)
    assert_protected(refused, "/admin/rollback")
    picture = io.BytesIO(jpeg(tinted("red", random.Random(2), 40)))
    result = admin.client.post("/classify", data={"file": (picture, "red.jpg"),
                                                  "csrf_token": admin.csrf_token()})
    page = result.get_data(as_text=True)
    assert result.status_code == 200 and 'src="data:image/jpeg;base64,' in page
    assert_protected(result, "/classify")
