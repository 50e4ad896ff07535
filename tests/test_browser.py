"""In a real browser: an admin logs in and finds the dataset and the model versions."""

import random

import pytest

from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving
from tests.pictures import jpeg, tinted


@pytest.fixture
def live_url(trained_dir):
    app = make_app(trained_dir[0], LOAD_MODEL=True, TESTING=False)
    with serving(app) as url:
        yield url


def test_admin_logs_in_and_sees_the_models(browser, live_url, trained_dir):
    page = browser.new_page()
    page.goto(live_url + "/")
    assert "knows: blue, red" in page.text_content("main")
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


def test_a_visitor_uploads_a_picture_and_sees_ranked_classes(browser, live_url, tmp_path):
    picture = tmp_path / "holiday photo.jpg"
    picture.write_bytes(jpeg(tinted("red", random.Random(5), 64)))
    page = browser.new_page()
    page.goto(live_url + "/")
    page.set_input_files("#file", str(picture))
    page.click("#classify-form button[type=submit]")
    assert page.text_content("#top-label") == "red"
    labels = page.locator("#predictions .label").all_text_contents()
    pcts = [float(p.rstrip("%")) for p in page.locator("#predictions .pct").all_text_contents()]
    assert labels[0] == "red" and sorted(labels) == ["blue", "red"]
    assert pcts == sorted(pcts, reverse=True) and abs(sum(pcts) - 100) < 0.5
    page.screenshot(path=str(ARTIFACTS / "classify.png"), full_page=True)
