"""Classification for visitors and scripts: the upload page and POST /api/classify."""
import io
import random
import time

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


@pytest.fixture(scope="module")
def url_client(trained_dir):
    app = make_app(trained_dir[0], LOAD_MODEL=True, FETCH_ALLOW_NETS="127.0.0.1/32,::1/128",
                   FETCH_MAX_BYTES=100_000, FETCH_DEADLINE=0.5)
    return app.test_client(), trained_dir[1]


def test_classify_url_answers_the_lessons_contract(url_client, httpserver):
    client, version = url_client
    httpserver.expect_request("/red.jpg").respond_with_data(red_picture(),
                                                            content_type="image/jpeg")
    r = client.get("/classify-url", query_string={"url": httpserver.url_for("/red.jpg")})
    body = r.get_json()
    assert r.status_code == 200 and body["model"] == version and body["predictions"][0][0] == "red"


def test_classify_url_errors(url_client, httpserver):
    from werkzeug import Response

    def trickle():
        for _ in range(20):
            time.sleep(0.1)
            yield b"z"

    client, _ = url_client
    httpserver.expect_request("/gone").respond_with_data("no", status=404)
    httpserver.expect_request("/page").respond_with_data("<html>hi</html>",
                                                         content_type="text/html")
    httpserver.expect_request("/huge").respond_with_data(b"x" * 200_000)
    httpserver.expect_request("/slow").respond_with_response(Response(trickle()))
    # A stranger reads generic sentences; an admin the details (tests/test_small_hardening.py).
    cases = {
        "": (400, "give the image's address"),
        "http://10.0.0.1/cat.jpg": (400, "cannot be fetched from here"),
        "file:///etc/passwd": (400, "only http and https"),
        httpserver.url_for("/gone"): (502, "did not give an image"),
        httpserver.url_for("/page"): (400, "not a usable image"),
        httpserver.url_for("/huge"): (413, "too large"),
        httpserver.url_for("/slow"): (504, "did not answer in time"),
    }
    for url, (code, message) in cases.items():
        r = client.get("/classify-url", query_string={"url": url})
        assert (r.status_code, message in r.get_json()["error"]) == (code, True), url


def test_classify_url_without_a_model_is_503(client):
    r = client.get("/classify-url", query_string={"url": "http://example.com/a.jpg"})
    assert r.status_code == 503 and "no model" in r.get_json()["error"]


def test_the_page_classifies_a_picture_by_its_address(url_client, httpserver):
    client, version = url_client
    httpserver.expect_request("/red.jpg").respond_with_data(red_picture(),
                                                            content_type="image/jpeg")
    page = client.get("/").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    r = client.post("/classify", data={"csrf_token": token, "url": httpserver.url_for("/red.jpg")})
    assert r.status_code == 200 and '<span id="top-label">red</span>' in r.get_data(as_text=True)
    r = client.post("/classify", data={"csrf_token": token, "url": "http://10.0.0.1/x.jpg"})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "cannot be used" in html
    assert 'value="http://10.0.0.1/x.jpg"' in html
    httpserver.expect_request("/page.html").respond_with_data("<html>hi</html>",
                                                              content_type="text/html")
    page_url = httpserver.url_for("/page.html")
    r = client.post("/classify", data={"csrf_token": token, "url": page_url})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "The picture at that address cannot be classified" in html
    assert "That file" not in html  # a URL is not a file
