"""Server-side fetching: public images come in; the inside of the network stays out of reach."""
import random
import time

import pytest
from werkzeug import Response

from tests.pictures import jpeg, tinted
from webapp.core import fetch

LOCAL = fetch.parse_allow_nets("127.0.0.1/32,::1/128")


def limits(**kw):
    return fetch.Limits(allow_nets=LOCAL, **kw)


PICTURE = jpeg(tinted("red", random.Random(3), 48))


def test_an_image_is_fetched(httpserver):
    httpserver.expect_request("/cat.jpg").respond_with_data(PICTURE, content_type="image/jpeg")
    assert fetch.fetch(httpserver.url_for("/cat.jpg"), limits()) == PICTURE


def test_redirects_are_followed_and_checked_again(httpserver):
    httpserver.expect_request("/a").respond_with_data("", status=302, headers={"Location": "/b"})
    httpserver.expect_request("/b").respond_with_data(PICTURE)
    assert fetch.fetch(httpserver.url_for("/a"), limits()) == PICTURE
    httpserver.expect_request("/evil").respond_with_data(
        "", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    with pytest.raises(fetch.FetchError, match="private or reserved") as e:
        fetch.fetch(httpserver.url_for("/evil"), limits())
    assert e.value.kind == "blocked"


def test_too_many_redirects(httpserver):
    httpserver.expect_request("/loop").respond_with_data("", status=302,
                                                         headers={"Location": "/loop"})
    with pytest.raises(fetch.FetchError, match="redirects"):
        fetch.fetch(httpserver.url_for("/loop"), limits())


def test_an_oversized_body_is_cut_off(httpserver):
    httpserver.expect_request("/big").respond_with_data(b"x" * 5000)
    with pytest.raises(fetch.FetchError, match="larger than") as e:
        fetch.fetch(httpserver.url_for("/big"), limits(max_bytes=1000))
    assert e.value.kind == "too_large"


def test_a_lying_content_length_does_not_help(httpserver):
    def stream():
        for _ in range(10):
            yield b"y" * 500

    httpserver.expect_request("/liar").respond_with_response(
        Response(stream(), headers={"Content-Length": "10"}, direct_passthrough=True))
    try:  # either it reads only what was announced, or it refuses; never past the cap
        assert len(fetch.fetch(httpserver.url_for("/liar"), limits(max_bytes=1000))) <= 10
    except fetch.FetchError as e:
        assert e.kind in ("too_large", "upstream")


def test_a_chunked_body_without_length_is_counted(httpserver):
    def stream():
        for _ in range(10):
            yield b"y" * 500

    httpserver.expect_request("/chunked").respond_with_response(Response(stream()))
    with pytest.raises(fetch.FetchError, match="larger than"):
        fetch.fetch(httpserver.url_for("/chunked"), limits(max_bytes=1000))


def test_a_trickling_server_hits_the_deadline(httpserver):
    def trickle():
        for _ in range(30):
            time.sleep(0.1)
            yield b"z"

    httpserver.expect_request("/slow").respond_with_response(Response(trickle()))
    started = time.monotonic()
    with pytest.raises(fetch.FetchError, match="longer than") as e:
        fetch.fetch(httpserver.url_for("/slow"), limits(deadline=0.5))
    assert e.value.kind == "timeout" and time.monotonic() - started < 2


def test_http_errors_are_reported(httpserver):
    httpserver.expect_request("/gone").respond_with_data("no", status=404)
    with pytest.raises(fetch.FetchError, match="HTTP 404"):
        fetch.fetch(httpserver.url_for("/gone"), limits())


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://localhost/", "http://[::1]/", "http://169.254.169.254/",
    "http://10.0.0.1/", "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/",
    "http://2130706433/", "http://0x7f.1/", "http://192.168.1.1/", "http://224.0.0.1/",
    "http://0.0.0.0/",
])
def test_inside_addresses_are_refused_without_connecting(url, monkeypatch):
    def no_connection(*a, **kw):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(fetch, "_pool", no_connection)
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch(url)  # no allowed networks: the production default
    assert e.value.kind == "blocked"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg",
                                 "gopher://example.com/", "data:image/png;base64,AAAA",
                                 "http:///nohost", "http://example.com:notaport/"])
def test_other_schemes_and_broken_urls_are_refused(url, monkeypatch):
    monkeypatch.setattr(fetch, "_pool", lambda *a, **kw: pytest.fail("connected"))
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch(url)
    assert e.value.kind == "bad_url"


def test_allowed_networks_open_only_themselves():
    nets = fetch.parse_allow_nets("10.1.0.0/16")
    assert not fetch.is_blocked("10.1.2.3", nets) and fetch.is_blocked("10.2.0.1", nets)
    assert fetch.is_blocked("::ffff:10.2.0.1", nets) and not fetch.is_blocked("8.8.8.8")
