"""Server-side fetching: public images come in; the inside of the network stays out of reach."""
import random
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from werkzeug import Response

from tests.conftest import make_app
from tests.pictures import jpeg, tinted
from webapp import config
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
    "http://0.0.0.0/", "http://[2002:7f00:1::]/", "http://[fec0::1]/",
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
    assert fetch.is_blocked("2002::1") and fetch.is_blocked("fec0::1")  # 6to4, site-local
    assert not fetch.is_blocked("2002::1", fetch.parse_allow_nets("2002::/16"))


# Raw servers: a hostile upstream controls every byte and every pause, headers included.

@contextmanager
def raw_server(answer):
    """Serve on 127.0.0.1 with `answer(conn, stop)` per connection; yield (port, connections)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop, connections, threads = threading.Event(), [], []

    def run(conn):
        with conn:
            try:
                answer(conn, stop)
            except OSError:
                pass  # the client hung up: what these tests want

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            connections.append(conn)
            threads.append(threading.Thread(target=run, args=(conn,), daemon=True))
            threads[-1].start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield listener.getsockname()[1], connections
    finally:
        stop.set()
        server.join(2)
        for thread in threads:
            thread.join(2)
        listener.close()


def trickle(data, every):
    """An answer that sends `data` one byte every `every` seconds."""
    def answer(conn, stop):
        for i in range(len(data)):
            if stop.wait(every):
                return
            conn.sendall(data[i:i + 1])
    return answer


def timed_failure(url, lim):
    """Fetch a URL that must fail; return the error and how long it took."""
    started = time.monotonic()
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch(url, lim)
    return e.value, time.monotonic() - started


HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc"


@pytest.mark.parametrize("scheme, data", [
    ("http", HEADERS),  # the status line itself, a byte at a time
    ("http", HEADERS[:17] + b"X-Padding: " + b"a" * 60),  # status at once, headers never end
    ("https", b"\x16\x03\x03\x40\x00" + b"\x02" * 60),  # a TLS handshake that never ends
], ids=["status-line", "headers", "tls-handshake"])
def test_a_server_trickling_its_headers_is_cut_off_at_the_deadline(scheme, data):
    with raw_server(trickle(data, 0.5)) as (port, _):
        error, took = timed_failure(f"{scheme}://127.0.0.1:{port}/cat.jpg", limits(deadline=2))
    assert error.kind == "timeout" and 1.5 < took < 3


def test_a_slow_redirect_chain_shares_one_deadline():
    def slow_redirect(conn, stop):
        if not stop.wait(0.8):
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nContent-Length: 0\r\n\r\n")

    with raw_server(slow_redirect) as (port, connections):
        error, took = timed_failure(f"http://127.0.0.1:{port}/a",
                                    limits(deadline=2, max_redirects=5))
    assert error.kind == "timeout" and took < 3 and len(connections) == 3


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nxx",  # then silence
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nxx",  # ends when the server closes
], ids=["content-length", "close-delimited"])
def test_a_stalled_body_is_cut_off_not_returned_short(head):
    def stall(conn, stop):
        conn.sendall(head)
        for _ in range(10):
            if stop.wait(1.5):
                return
            conn.sendall(b"y")

    with raw_server(stall) as (port, _):
        error, took = timed_failure(f"http://127.0.0.1:{port}/cat.jpg", limits(deadline=2))
    assert error.kind == "timeout" and took < 2.7


def test_a_host_that_never_resolves_is_given_up_on(monkeypatch):
    answered = threading.Event()

    def hang(*args, **kw):
        answered.wait(5)
        raise socket.gaierror("too late")

    monkeypatch.setattr(fetch.socket, "getaddrinfo", hang)
    try:
        error, took = timed_failure("http://images.example/cat.jpg", fetch.Limits(deadline=1))
    finally:
        answered.set()
    assert error.kind == "timeout" and took < 1.5


def stalled(conn, stop):
    """An answer that never comes, until the test ends."""
    stop.wait(10)


@contextmanager
def fetch_in_flight(cap):
    """Hold one fetch with `cap` running against a stalled server; yield that server's port."""
    with raw_server(stalled) as (port, connections):
        slow = threading.Thread(target=fetch_one_quietly,
                                args=(f"http://127.0.0.1:{port}/", limits(concurrency=cap)))
        slow.start()
        for _ in range(100):
            if connections:
                break
            time.sleep(0.02)
        assert connections, "the slow fetch never connected"
        yield port
    slow.join(5)


def fetch_one_quietly(url, lim):
    try:
        fetch.fetch(url, lim)
    except fetch.FetchError:
        pass  # the stalled server hangs up when the test ends


def test_past_the_cap_a_fetch_is_refused_at_once(httpserver):
    httpserver.expect_request("/cat.jpg").respond_with_data(PICTURE)
    with fetch_in_flight(cap=1):
        error, took = timed_failure(httpserver.url_for("/cat.jpg"), limits(concurrency=1))
        assert error.kind == "busy" and took < 0.5
        # The download job's limits come from the same settings without the web's cap.
        job = fetch.Limits.from_settings({"FETCH_MAX_BYTES": 10**6, "FETCH_DEADLINE": 2.0,
                                          "FETCH_ALLOW_NETS": "127.0.0.1/32",
                                          "FETCH_CONCURRENCY": 1})
        assert job.concurrency is None
        assert fetch.fetch(httpserver.url_for("/cat.jpg"), job) == PICTURE
    assert fetch.fetch(httpserver.url_for("/cat.jpg"), limits(concurrency=1)) == PICTURE


class AnyClassifier:
    """A served model that is never asked: the fetch is refused before it."""

    version = "fake"


def test_classify_url_says_503_when_the_server_is_busy_fetching(tmp_path, monkeypatch):
    monkeypatch.setenv("WINNOW_FETCH_CONCURRENCY", "7")
    assert config.from_environment()["FETCH_CONCURRENCY"] == 7
    app = make_app(tmp_path / "data", FETCH_CONCURRENCY=1, FETCH_ALLOW_NETS="127.0.0.0/8")
    app.extensions["winnow.model"].classifier = AnyClassifier()
    client = app.test_client()
    with fetch_in_flight(cap=1) as port:
        r = client.get("/classify-url", query_string={"url": f"http://127.0.0.1:{port}/b.jpg"})
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
        assert "try again" in r.get_json()["error"]
        page = client.get("/").get_data(as_text=True)
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        r = client.post("/classify", data={"csrf_token": token,
                                           "url": f"http://127.0.0.1:{port}/b.jpg"})
        assert r.status_code == 503 and "try again" in r.get_data(as_text=True)
