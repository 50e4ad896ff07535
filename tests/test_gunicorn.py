"""gunicorn as deployed: two preloaded workers answer every request, and swap models live."""
import concurrent.futures
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.pictures import jpeg, tinted
from tests.test_app import second_version
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


@pytest.fixture
def gunicorn(trained_copy, tmp_path):
    data_dir, version, _ = trained_copy
    port = free_port()
    env = {**os.environ, "WINNOW_DATA_DIR": str(data_dir), "WINNOW_BIND": f"127.0.0.1:{port}",
           "WINNOW_WORKERS": "2", "WINNOW_ADMIN_PASSWORD": "pw"}
    log = open(tmp_path / "gunicorn.log", "w")
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if get_json(base + "/readyz", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log_text = (tmp_path / "gunicorn.log").read_text()
            pytest.fail("gunicorn did not become ready:\n" + log_text)
        time.sleep(0.5)
    yield base, data_dir, version
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


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
