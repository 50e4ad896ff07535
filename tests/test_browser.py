"""In a real browser: an admin logs in and finds the dataset and the model versions."""
import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import PASSWORD, make_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium for the browser tests; .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def live_url(trained_dir):
    app = make_app(trained_dir[0], LOAD_MODEL=True, TESTING=False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_admin_logs_in_and_sees_the_models(browser, live_url, trained_dir):
    page = browser.new_page()
    page.goto(live_url + "/")
    assert "Active model" in page.text_content("main")
    page.click("text=Admin login")
    page.fill("#password", "wrong")
    page.click("button[type=submit]")
    assert "not right" in page.text_content("main")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/")
    assert trained_dir[1] in page.text_content("main")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
    page.click("text=Log out")
    page.wait_for_url(live_url + "/")
    page.goto(live_url + "/admin/")
    assert "/login" in page.url
