"""In a real browser: the SGD animation moves, and a learning rate too high is explained."""
import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from webapp import create_app

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
def live_url(tmp_path):
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "LOAD_MODEL": False,
                      "ADMIN_PASSWORD": "pw"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_fit_animates_and_a_rate_too_high_is_explained(browser, live_url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_url + "/learn/sgd")
    page.wait_for_selector("#sgd-canvas[data-step]")  # the first frame is drawn
    canvas = page.locator("#sgd-canvas")
    first = canvas.screenshot()
    page.wait_for_timeout(400)
    second = canvas.screenshot()
    assert first != second, "the canvas did not change while the animation played"
    assert "Step" in page.text_content("#sgd-step")

    page.wait_for_selector("#sgd-canvas[data-done]", timeout=15000)
    assert "After 100 steps" in page.text_content("#sgd-status")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sgd.png"), full_page=True)

    page.fill("#sgd-lr", "2")  # ten times the lesson's rate here
    page.click("button[type=submit]")
    page.wait_for_function(
        "document.getElementById('sgd-status').textContent.includes('learning rate is too high')")
    assert "diverged" in page.get_attribute("#sgd-status", "class")
    assert "lr=2" in page.get_attribute("#sgd-gif", "href") and "lr=2" in page.url
    page.wait_for_selector("#sgd-canvas[data-done]", timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "sgd-diverged.png"), full_page=True)
    assert errors == []
