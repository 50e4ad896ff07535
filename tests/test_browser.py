"""In a real browser: an admin logs in and finds the dataset and the model versions."""

import pytest

from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving

@pytest.fixture
def live_url(trained_dir):
    app = make_app(trained_dir[0], LOAD_MODEL=True, TESTING=False)
    with serving(app) as url:
        yield url


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
    page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
    page.click("text=Log out")
    page.wait_for_url(live_url + "/")
    page.goto(live_url + "/admin/")
    assert "/login" in page.url
