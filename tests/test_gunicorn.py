"""gunicorn as deployed: two preloaded workers answer every request, and swap models live."""
import concurrent.futures
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.pictures import jpeg, tinted
from tests.test_app import second_version
from tests.test_node import second_version as bundled_version
from webapp.model import registry

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, data=None, timeout=15):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "image/jpeg"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


@contextlib.contextmanager
def serving(data_dir, log_path, **env):
    """Run gunicorn with the project's gunicorn.conf.py on a free port; yield its base URL."""
    port = free_port()
    env = {**os.environ, "WINNOW_DATA_DIR": str(data_dir), "WINNOW_BIND": f"127.0.0.1:{port}",
           "WINNOW_WORKERS": "2", "WINNOW_ADMIN_PASSWORD": "pw",
           # Every client here is 127.0.0.1: the per-client limit would answer 429.
           "WINNOW_CLASSIFY_RATE_LIMIT": "1000000 per minute", **env}
    log = open(log_path, "w")
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if get_json(base + "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("gunicorn did not become ready:\n" + Path(log_path).read_text())
            time.sleep(0.5)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def gunicorn(trained_copy, tmp_path):
    data_dir, version, _ = trained_copy
    with serving(data_dir, tmp_path / "gunicorn.log") as base:
        yield base, data_dir, version


def test_two_workers_answer_200_requests_and_swap_models_under_load(gunicorn):
    base, data_dir, v1 = gunicorn
    v2 = second_version(data_dir, v1)
    pictures = [jpeg(tinted(random.choice(["red", "blue"]), random.Random(i), 48))
                for i in range(20)]

    def classify(i):
        if i == 100:  # halfway through, an admin activates another version
            registry.activate(data_dir, v2)
        status, body = get_json(base + "/api/classify", data=pictures[i % 20])
        return status, body["model"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(classify, range(200)))
    assert all(status == 200 for status, _ in answers), answers
    assert {model for _, model in answers} <= {v1, v2}
    time.sleep(1.5)  # every worker checks models/ACTIVE at most a second apart
    served = {get_json(base + "/api/classify", data=pictures[0])[1]["model"] for _ in range(20)}
    assert served == {v2}


def test_metrics_add_up_across_workers(gunicorn):
    base, _, version = gunicorn
    picture = jpeg(tinted("red", random.Random(0), 48))
    for _ in range(12):
        assert get_json(base + "/api/classify", data=picture)[0] == 200
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    line = next(ln for ln in text.splitlines()
                if ln.startswith('winnow_requests_total{endpoint="/api/classify",status="200"}'))
    assert float(line.split()[-1]) == 12  # whichever worker answered each one
    serving = [ln for ln in text.splitlines()
               if ln.startswith("winnow_active_model{") and ln.endswith(" 1.0")]
    assert 1 <= len(serving) <= 2 and all(f'version="{version}"' in ln for ln in serving)


@contextlib.contextmanager
def slow_upstream():
    """A server on 127.0.0.1 that answers every request one byte a second; yield its URL."""
    response = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 9999\r\n\r\n"
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)

    def trickle(conn):
        with conn:
            try:
                conn.recv(65536)
                for i in range(len(response)):
                    if stop.wait(1.0 if i else 0):
                        return
                    conn.sendall(response[i:i + 1])
            except OSError:
                pass  # the fetch gave up at its deadline

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/slow.jpg"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_healthz_answers_while_slow_upstreams_hold_classify_url(trained_copy, tmp_path):
    data_dir, _, _ = trained_copy
    env = {"WINNOW_FETCH_ALLOW_NETS": "127.0.0.0/8", "WINNOW_FETCH_DEADLINE": "4"}
    with slow_upstream() as url, serving(data_dir, tmp_path / "gunicorn.log", **env) as base:
        target = base + "/classify-url?url=" + urllib.parse.quote(url, safe="")

        def classify_url():
            try:
                with urllib.request.urlopen(target, timeout=20) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(classify_url) for _ in range(2)]
            time.sleep(1)  # both fetches are trickling now
            waits = []
            for _ in range(5):
                started = time.monotonic()
                try:
                    status = get_json(base + "/healthz", timeout=1)[0]
                except OSError as e:
                    status = repr(e)
                waits.append((status, round(time.monotonic() - started, 2)))
                time.sleep(0.3)
            statuses = [f.result() for f in slow]
    assert all(status == 200 and s < 1 for status, s in waits), waits
    assert statuses == [504, 504]  # the fetch deadline, not the client, ended them


def test_a_serving_node_under_gunicorn_follows_activations_under_load(trained_copy, tmp_path):
    data_dir, v1, _ = trained_copy
    models = registry.models_dir(data_dir)
    with serving(tmp_path / "node-instance", tmp_path / "node.log", WINNOW_ROLE="node",
                 WINNOW_MODEL_SOURCE=str(models),
                 WINNOW_MODEL_CACHE=str(tmp_path / "cache")) as base:
        assert get_json(base + "/readyz")[1]["role"] == "node"
        v2 = bundled_version(data_dir, v1, activate=False)
        picture = jpeg(tinted("red", random.Random(1), 48))

        def classify(i):
            if i == 40:
                registry.activate(data_dir, v2)
            status, body = get_json(base + "/api/classify", data=picture)
            return status, body["model"]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(classify, range(120)))
        assert all(status == 200 for status, _ in answers)
        deadline = time.monotonic() + 5  # the bound on a node's switch
        while time.monotonic() < deadline:
            served = {get_json(base + "/api/classify", data=picture)[1]["model"] for _ in range(8)}
            if served == {v2}:
                break
            time.sleep(0.2)
        assert served == {v2}
        assert not (tmp_path / "node-instance" / "winnow.sqlite3").exists()  # no store on a node
