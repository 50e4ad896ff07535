"""In a real browser: the SGD animation moves, and a learning rate too high is explained."""

import pytest

from tests.conftest import ARTIFACTS, serving
from webapp.app import create_app


@pytest.fixture
def live_url(tmp_path):
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "LOAD_MODEL": False,
                      "ADMIN_PASSWORD": "pw"})
    with serving(app) as url:
        yield url


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
    page.screenshot(path=str(ARTIFACTS / "sgd.png"), full_page=True)

    page.fill("#sgd-lr", "2")  # ten times the lesson's rate here
    page.click("button[type=submit]")
    page.wait_for_function(  # a function: the CSP refuses the eval a bare expression is polled by
        "() => document.getElementById('sgd-status').textContent"
        ".includes('learning rate is too high')")
    assert "diverged" in page.get_attribute("#sgd-status", "class")
    assert "lr=2" in page.get_attribute("#sgd-gif", "href") and "lr=2" in page.url
    page.wait_for_selector("#sgd-canvas[data-done]", timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "sgd-diverged.png"), full_page=True)
    assert errors == []
