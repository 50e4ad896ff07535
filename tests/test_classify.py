"""Classification for visitors and scripts: the upload page and POST /api/classify."""
import io
import random

import pytest

from tests.conftest import make_app
from tests.pictures import encode, jpeg, tinted


@pytest.fixture(scope="module")
def served_client(trained_dir):
    return make_app(trained_dir[0], LOAD_MODEL=True).test_client(), trained_dir[1]


def red_picture():
    return jpeg(tinted("red", random.Random(21), 48))


def test_api_classifies_a_multipart_upload(served_client):
    client, version = served_client
    r = client.post("/api/classify", data={"file": (io.BytesIO(red_picture()), "x.jpg")})
    body = r.get_json()
    assert r.status_code == 200 and body["model"] == version
    assert [label for label, _ in body["predictions"]][0] == "red"
    probs = [p for _, p in body["predictions"]]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4


def test_api_classifies_a_raw_body(served_client):
    client, _ = served_client
    r = client.post("/api/classify", data=encode(tinted("blue", random.Random(2), 40), "PNG"),
                    content_type="image/png")
    assert r.status_code == 200 and r.get_json()["predictions"][0][0] == "blue"


@pytest.mark.parametrize("data, content_type", [
    (b"", "image/jpeg"),
    (b"<html>nope</html>", "text/html"),
    (b"GIF89a truncated", "image/gif"),
])
def test_api_refuses_what_is_not_an_image(served_client, data, content_type):
    client, _ = served_client
    r = client.post("/api/classify", data=data, content_type=content_type)
    assert r.status_code == 400 and r.get_json()["error"].startswith("not a usable image")


def test_api_says_413_for_a_body_too_large(trained_dir):
    client = make_app(trained_dir[0], LOAD_MODEL=True, MAX_CONTENT_LENGTH=1000).test_client()
    r = client.post("/api/classify", data=b"x" * 5000, content_type="image/jpeg")
    assert r.status_code == 413 and "too large" in r.get_json()["error"]


def test_api_says_503_without_a_model(client):
    r = client.post("/api/classify", data=red_picture(), content_type="image/jpeg")
    assert r.status_code == 503 and "no model is active" in r.get_json()["error"]


def test_the_result_page_ranks_every_class(served_client):
    client, version = served_client
    page = client.get("/").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    r = client.post("/classify", data={"csrf_token": token,
                                       "file": (io.BytesIO(red_picture()), "x.jpg")})
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and '<span id="top-label">red</span>' in html
    assert html.index('class="label">red') < html.index('class="label">blue') and version in html


def test_the_page_explains_a_bad_upload(served_client):
    client, _ = served_client
    page = client.get("/").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    r = client.post("/classify", data={"csrf_token": token,
                                       "file": (io.BytesIO(b"hello"), "a.jpg")})
    assert r.status_code == 400 and "cannot be classified" in r.get_data(as_text=True)
