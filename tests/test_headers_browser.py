"""In a real browser: every page works under the strict policy, and no other site can frame one."""
import contextlib
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.cleaning_data import fake_cv_scores, fake_scores
from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving
from tests.pictures import jpeg, tinted
from webapp.dataset.store import Dataset

PAGES = ["/", "/learn/sgd", "/login", "/admin/", "/label/", "/label/upload", "/label/urls",
         "/label/queue", "/clean/", "/clean/duplicates", "/clean/label-issues", "/clean/outliers",
         "/clean/history",
         "/jobs/", "/admin/models/import"]
# Chromium reports each refusal both as a DOM event and on the console; keep both.
WATCH_VIOLATIONS = """window.__violations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));"""
LOADED_WIDTH = """i => i.complete ? i.naturalWidth : new Promise(done => {
    i.onload = () => done(i.naturalWidth); i.onerror = () => done(0); })"""


@pytest.fixture
def live(trained_copy):
    """The trained model served, with its images scored so the cleaner has lists to show."""
    data_dir, version, _ = trained_copy
    ds = Dataset(data_dir)
    ids = [row["id"] for row in ds.labeled()]
    ds.close()
    rng = random.Random(5)
    probs = [[p, 1 - p] for p in (rng.random() for _ in ids)]
    fake_scores(data_dir, ids, ["blue", "red"], probs, version=version)
    fake_cv_scores(data_dir, ids, ["blue", "red"], probs, version=version)
    with serving(make_app(data_dir, LOAD_MODEL=True, TESTING=False)) as url:
        yield url, version


def refusals(messages):
    """Return the console messages that report a Content-Security-Policy refusal."""
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


def test_every_page_loads_and_runs_its_scripts_under_the_policy(browser, live):
    url, version = live
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.add_init_script(WATCH_VIOLATIONS)
    page = context.new_page()
    messages, errors = [], []
    page.on("console", lambda m: messages.append(f"{page.url}: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    page.goto(url + "/login")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/")

    violations = []
    for path in PAGES + [f"/admin/models/{version}"]:
        response = page.goto(url + path)
        assert response.ok, path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")
        slug = path.replace(version, "report").strip("/").replace("/", "-") or "classify"
        page.screenshot(path=str(ARTIFACTS / f"headers-{slug}.png"), full_page=True)
        violations += [f"{path}: {v}" for v in page.evaluate("window.__violations")]

    # The scripts run: the SGD animation draws, the cleaner's keys move, a drop zone lights up.
    page.goto(url + "/learn/sgd")
    page.wait_for_selector("#sgd-canvas[data-step]")
    page.goto(url + "/clean/")
    assert page.locator(".clean-card").count() > 0
    page.keyboard.press("j")
    page.wait_for_selector(".clean-card.current")
    page.goto(url + "/label/upload")
    page.dispatch_event("#upload-form", "dragenter")
    assert "over" in page.get_attribute("#upload-form", "class")

    # The styles apply from the stylesheet: the confusion matrix is shaded by class.
    page.goto(url + f"/admin/models/{version}")
    shades = page.locator("table.confusion td").evaluate_all(
        "tds => tds.map(td => getComputedStyle(td).backgroundColor)")
    assert shades and any(s not in ("rgba(0, 0, 0, 0)", "transparent") for s in shades), shades

    # The classify result shows the picture sent as a data: image, and one bar per class.
    page.goto(url + "/")
    page.set_input_files("#file", {"name": "red.jpg", "mimeType": "image/jpeg",
                                   "buffer": jpeg(tinted("red", random.Random(3), 64))})
    page.click("#classify-form button[type=submit]")
    page.wait_for_selector("#predictions")
    assert page.locator("img.shown").evaluate(LOADED_WIDTH) > 0
    values = page.locator("meter.bar").evaluate_all("ms => ms.map(m => m.value)")
    assert len(values) == 2 and abs(sum(values) - 1) < 0.01
    page.screenshot(path=str(ARTIFACTS / "headers-classify-result.png"), full_page=True)
    violations += page.evaluate("window.__violations")

    assert violations == []
    assert refusals(messages) == []
    assert errors == []
    context.close()


@contextlib.contextmanager
def another_origin(html):
    """Serve `html` at the root of another port on 127.0.0.1; yield its URL."""
    body = html.encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):  # the name http.server calls
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()


def test_a_page_from_another_origin_cannot_frame_the_admin_page(browser, live):
    url, _ = live
    page = browser.new_page()
    messages = []
    page.on("console", lambda m: messages.append(m.text))
    # Another origin puts the admin page in a frame, to lay its own buttons over Activate.
    with another_origin(f'<iframe id="admin" src="{url}/admin/"></iframe>') as elsewhere:
        page.goto(elsewhere)  # its load waits for the frame, refused or shown
        framed = [f for f in page.frames if f != page.main_frame]
        assert len(framed) == 1
        assert not framed[0].url.startswith(url), "the admin page loaded in another's frame"
        assert any("frame-ancestors 'none'" in m for m in refusals(messages)), messages
        page.screenshot(path=str(ARTIFACTS / "headers-framed.png"))
