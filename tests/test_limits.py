"""Rate limits that hold across gunicorn workers, per client, and the SGD GIFs drawn once."""
import multiprocessing
import os
import shutil
import socket
import subprocess
import time

import pytest

from tests.conftest import AdminSession, make_app
from webapp.lesson import sgd
from webapp.web import limits
from webapp.web.errors import MESSAGES


def client_at(app, address):
    """Return a test client whose requests come from `address`."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_two_workers_count_one_clients_logins_together(tmp_path):
    """Two apps on one data dir stand in for two gunicorn workers: 10 a minute in all."""
    apps = [make_app(tmp_path / "data") for _ in range(2)]
    workers = [AdminSession(app.test_client()) for app in apps]
    codes = [workers[i % 2].login("guess").status_code for i in range(12)]  # 6 on each
    assert codes == [401] * 10 + [429] * 2
    assert [w.login().status_code for w in workers] == [429, 429]  # even the right password
    assert AdminSession(client_at(apps[1], "198.51.100.9")).login().status_code == 302


def test_a_client_that_classifies_too_often_gets_429_json_and_others_do_not(tmp_path):
    app = make_app(tmp_path / "data", CLASSIFY_RATE_LIMIT="3 per minute",
                   WTF_CSRF_ENABLED=False)
    client = client_at(app, "203.0.113.7")

    def classify(c):
        return c.post("/api/classify", data=b"x", content_type="image/jpeg")

    assert [classify(client).status_code for _ in range(3)] == [503] * 3  # no model; each counts
    r = classify(client)
    assert r.status_code == 429 and r.get_json() == {"error": MESSAGES[429]}
    # The same budget on every door to the model: the URL endpoint and the page's form.
    r = client.get("/classify-url", query_string={"url": "http://example.com/a.jpg"})
    assert r.status_code == 429 and "error" in r.get_json()
    assert client.post("/classify", data={"url": ""}).status_code == 429
    assert classify(client_at(app, "198.51.100.9")).status_code == 503


def test_the_sgd_lesson_is_limited_per_client(tmp_path):
    client = make_app(tmp_path / "data", SGD_RATE_LIMIT="2 per minute").test_client()
    assert [client.get("/learn/sgd.json").status_code for _ in range(2)] == [200, 200]
    r = client.get("/learn/sgd.json")
    assert r.status_code == 429 and "error" in r.get_json()
    assert client.get("/learn/sgd.gif").status_code == 429
    assert client.get("/learn/sgd").status_code == 429


@pytest.fixture
def drawn(monkeypatch):
    """Count the GIFs drawn (a cheap stand-in for drawing), on an empty cache."""
    calls = []

    def render(run):
        calls.append(run.options)
        return b"GIF89a" + repr(run.options).encode()

    sgd.gif.cache_clear()
    monkeypatch.setattr(sgd, "render_gif", render)
    yield calls
    sgd.gif.cache_clear()  # leave no stand-in GIFs behind for other tests


def test_the_same_sgd_gif_is_drawn_once_and_served_again(client, drawn):
    url = "/learn/sgd.gif?bs=20&epochs=3&seed=7&lr=0.2"
    first = client.get(url)
    again = client.get("/learn/sgd.gif?bs=20&epochs=3&seed=7&lr=0.20")  # the same options
    assert first.status_code == again.status_code == 200
    assert again.data == first.data and len(drawn) == 1
    other = client.get("/learn/sgd.gif?bs=20&epochs=3&seed=8&lr=0.2")
    assert other.status_code == 200 and other.data != first.data and len(drawn) == 2


def _count(uri, n, out):
    storage = limits.SqliteStorage(uri)
    out.put([storage.incr("login/203.0.113.7", 60) for _ in range(n)])


def test_the_store_counts_atomically_across_processes(tmp_path):
    uri = limits.storage_uri({"REDIS_URL": None, "DATA_DIR": str(tmp_path / "data dir")})
    (tmp_path / "data dir").mkdir()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_count, args=(uri, 200, out)) for _ in range(2)]
    for p in procs:
        p.start()
    seen = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    # Every increment saw its own new count: none was lost, none read a stale one.
    assert sorted(seen[0] + seen[1]) == list(range(1, 401))
    assert limits.SqliteStorage(uri).get("login/203.0.113.7") == 400


def test_a_window_that_has_ended_counts_from_zero_again(tmp_path):
    storage = limits.SqliteStorage(limits.storage_uri({"REDIS_URL": None,
                                                       "DATA_DIR": str(tmp_path)}))
    assert [storage.incr("k", 0.2) for _ in range(3)] == [1, 2, 3]
    assert storage.get("k") == 3 and time.time() < storage.get_expiry("k") <= time.time() + 0.2
    time.sleep(0.3)
    assert storage.get("k") == 0 and storage.incr("k", 60) == 1
    storage.clear("k")
    assert storage.get("k") == 0 and storage.check()


@pytest.fixture
def redis_url(tmp_path):
    """A Redis server of Debian's on a free 127.0.0.1 port, stopped at the end.

    Missing, it skips here and fails under CI, whose .ci/run installs it.
    """
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's redis-server for the Redis limits test; .ci/run "
                        "installs it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_with_redis_two_sites_on_different_machines_share_one_login_count(tmp_path, redis_url):
    """WINNOW_REDIS_URL: apps with different data dirs (other machines) count in one place."""
    apps = [make_app(tmp_path / f"data{i}", REDIS_URL=redis_url) for i in range(2)]
    workers = [AdminSession(app.test_client()) for app in apps]
    codes = [workers[i % 2].login("guess").status_code for i in range(12)]
    assert codes == [401] * 10 + [429] * 2  # the data dirs differ: only Redis saw them all
