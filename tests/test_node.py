"""A serving node (WINNOW_ROLE=node) follows the admin's registry and serves the public pages.

The stories: a node pulls the active version from a shared models/ folder and classifies as
the admin does; it answers nothing but the public pages; it swaps in a new activation; it
refuses a tampered bundle and keeps its last good version; started with its source down, it
serves its cache; and it never imports torch or fastai.
"""
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_app
from tests.pictures import jpeg, tinted
from webapp.app import create_app
from webapp.model import bundle, registry
from webapp.runtime import bundle as rt, follow

ROOT = Path(__file__).resolve().parent.parent


def node_app(source, cache, **overrides):
    """A serving node on `source` (a models/ folder or the admin's URL), caching in `cache`."""
    return create_app({"TESTING": True, "ROLE": "node", "MODEL_SOURCE": str(source),
                       "MODEL_CACHE": str(cache), "LOAD_MODEL": True, **overrides})


def red_picture():
    return jpeg(tinted("red", random.Random(21), 48))


def second_version(data_dir, version, tamper=None, activate=True):
    """Register a copy of `version`, bundle included, as a new version and activate it;
    `tamper(bundle_dir)` may break the copy's bundle first."""
    src = registry.models_dir(data_dir) / version
    dst = registry.new_version_dir(data_dir)
    for item in src.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst / item.name)
    if tamper:
        tamper(bundle.bundle_dir(dst))
    metrics = json.loads((src / registry.METRICS).read_text())
    new = registry.record_version(data_dir, dst, metrics, "test")
    if activate:
        registry.activate(data_dir, new)
    return new


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def node(trained_copy, tmp_path):
    data_dir, version, _ = trained_copy
    app = node_app(registry.models_dir(data_dir), tmp_path / "cache")
    return app, data_dir, version


def classify(client):
    r = client.post("/api/classify", data={"file": (io.BytesIO(red_picture()), "x.jpg")})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def test_a_node_serves_the_active_version_of_a_shared_models_folder(node):
    app, data_dir, version = node
    client = app.test_client()
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["role"] == "node" and ready["model"] == version
    assert ready["runtime"] == "onnx" and ready["source"]["state"] == "ok"
    assert ready["source"]["active"] == version and ready["source"]["last_error"] is None
    answer = classify(client)
    # The same answer as the admin node's, which serves the same bundle.
    admin = make_app(data_dir, LOAD_MODEL=True).test_client()
    expected = admin.post("/api/classify",
                          data={"file": (io.BytesIO(red_picture()), "x.jpg")}).get_json()
    assert answer == expected and answer["model"] == version
    cached = app.config["MODEL_CACHE"]
    assert (Path(cached) / "versions" / version / rt.MANIFEST).is_file()


def test_a_node_answers_only_the_public_pages(node):
    app, _, _ = node
    client = app.test_client()
    for path in ("/admin/", "/login", "/label/", "/clean/", "/jobs/", "/learn/sgd",
                 "/api/openapi.json", "/registry/active", "/media/thumb/1"):
        assert client.get(path).status_code == 404, path
    for path in ("/", "/healthz", "/readyz", "/metrics", "/static/style.css"):
        assert client.get(path).status_code == 200, path
    page = client.get("/").get_data(as_text=True)
    assert "Admin login" not in page and "SGD" not in page and "csrf_token" not in page
    # The page's own form posts without a token: a node keeps no sessions to protect.
    r = client.post("/classify", data={"file": (io.BytesIO(red_picture()), "x.jpg")},
                    content_type="multipart/form-data")
    assert r.status_code == 200 and "red" in r.get_data(as_text=True)
    r = client.get("/classify-url")
    assert r.status_code == 400 and "url" in r.get_json()["error"]
    assert "set-cookie" not in {k.lower() for k in r.headers.keys()}


def test_a_node_swaps_in_a_new_activation_within_its_poll(node):
    app, data_dir, v1 = node
    client = app.test_client()
    client.get("/healthz")  # the first request starts this process's follower thread
    v2 = second_version(data_dir, v1)
    deadline = time.monotonic() + 5
    while client.get("/readyz").get_json()["model"] != v2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get("/readyz").get_json()["model"] == v2
    assert classify(client)["model"] == v2
    registry.activate(data_dir, v1, kind="rollback")
    deadline = time.monotonic() + 5
    while classify(client)["model"] != v1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert classify(client)["model"] == v1
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'winnow_active_model{{version="{v1}"}} 1.0' in metrics


@pytest.mark.parametrize("tamper, why", [
    (lambda d: flip_a_byte(d / rt.FP32), "model.onnx does not match its sha256"),
    (lambda d: (d / rt.REFERENCE).unlink(), "reference.npz"),
    (lambda d: (d / rt.MANIFEST).write_text((d / rt.MANIFEST).read_text() + " "),
     "bundle.json does not match the sha256"),
])
def test_a_tampered_bundle_is_refused_and_the_last_good_version_serves(node, tamper, why):
    app, data_dir, v1 = node
    client = app.test_client()
    follower = app.extensions["winnow.model"].follower
    v2 = second_version(data_dir, v1, tamper=tamper)
    follower.check()
    ready = client.get("/readyz").get_json()
    assert ready["model"] == v1 and ready["source"]["active"] == v2
    assert ready["source"]["state"] == "refused" and why in ready["source"]["last_error"]
    assert classify(client)["model"] == v1
    assert not (Path(app.config["MODEL_CACHE"]) / "versions" / v2).exists()
    assert 'winnow_model_source_failures_total{kind="refused"}' in (
        client.get("/metrics").get_data(as_text=True))


def test_an_active_version_without_a_bundle_is_reported_and_the_last_good_serves(node):
    app, data_dir, v1 = node
    src = registry.models_dir(data_dir) / v1
    v2 = registry.new_version_dir(data_dir)
    shutil.copy2(src / registry.EXPORT, v2 / registry.EXPORT)
    registry.activate(data_dir, registry.record_version(data_dir, v2, {}, "test"))
    app.extensions["winnow.model"].follower.check()
    ready = app.test_client().get("/readyz").get_json()
    assert ready["model"] == v1 and "no serving bundle" in ready["source"]["last_error"]


def test_a_roll_back_swaps_in_the_version_this_process_checked_before_at_once(node,
                                                                              monkeypatch):
    app, data_dir, v1 = node
    follower = app.extensions["winnow.model"].follower
    v2 = second_version(data_dir, v1)
    follower.check()
    assert follower.version == v2
    # Rolling back needs no second load: the checked v1 predictor is still in memory.
    monkeypatch.setattr(follow.rt, "load", lambda *a, **k: pytest.fail("loaded again"))
    registry.activate(data_dir, v1, kind="rollback")
    follower.check()
    assert follower.version == v1 and follower.state == "ok"
    assert classify(app.test_client())["model"] == v1
    # ... and the cache says so, for a restart while the admin is down.
    assert follower.cache.current()[0] == v1


def test_a_worker_behind_its_node_catches_up_from_the_cache_while_the_source_is_down(
        node, tmp_path):
    app, data_dir, v1 = node
    follower = app.extensions["winnow.model"].follower
    forked_from_master = (follower.predictor, follower.sha256)  # what the master had loaded
    v2 = second_version(data_dir, v1)
    follower.check()  # another worker of the node moved on to v2 and cached it
    assert follower.version == v2
    # A worker forked from the master, which still holds v1, starts while the admin is down.
    late = follow.Follower(follow.DirectorySource(tmp_path / "unmounted"),
                           app.config["MODEL_CACHE"])
    late._swap(*forked_from_master)
    assert late.version == v1
    late.check()
    assert late.version == v2 and late.state == "unreachable"


def test_a_node_started_while_its_source_is_down_serves_its_cache(node, tmp_path):
    app, data_dir, v1 = node
    cache = app.config["MODEL_CACHE"]
    # The same cache; the source is gone (an unmounted share) or a port nobody listens on.
    for source in (tmp_path / "unmounted", "http://127.0.0.1:9"):
        again = node_app(source, cache, NODE_TOKEN="wn_x").test_client()
        ready = again.get("/readyz").get_json()
        assert ready["status"] == "ready" and ready["model"] == v1
        assert ready["source"]["state"] == "unreachable" and ready["source"]["last_error"]
        assert classify(again)["model"] == v1
        metrics = again.get("/metrics").get_data(as_text=True)
        assert f'winnow_model_source_up{{source="{source}"}} 0.0' in metrics


def test_a_node_with_neither_source_nor_cache_is_not_ready(tmp_path):
    client = node_app(tmp_path / "nothing", tmp_path / "cache").test_client()
    r = client.get("/readyz")
    assert r.status_code == 503 and r.get_json()["source"]["state"] == "unreachable"
    r = client.post("/api/classify", data=red_picture(), content_type="image/jpeg")
    assert r.status_code == 503
    assert "No model is being served yet" in client.get("/").get_data(as_text=True)


def test_a_cached_version_that_no_longer_verifies_is_not_served(node, tmp_path):
    app, _, v1 = node
    cache = Path(app.config["MODEL_CACHE"])
    flip_a_byte(cache / "versions" / v1 / rt.FP32)
    client = node_app(tmp_path / "unmounted", cache).test_client()
    r = client.get("/readyz")
    assert r.status_code == 503


@pytest.mark.parametrize("settings, message", [
    ({"ROLE": "edge"}, "WINNOW_ROLE='edge': choose one of admin, node"),
    ({"ROLE": "node", "MODEL_SOURCE": None}, "needs WINNOW_MODEL_SOURCE"),
    ({"ROLE": "node", "MODEL_SOURCE": "http://admin.internal:8000", "NODE_TOKEN": None},
     "set WINNOW_NODE_TOKEN"),
])
def test_a_misconfigured_node_stops_with_the_reason(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        create_app({"TESTING": True, "MODEL_CACHE": str(tmp_path / "c"), **settings})


class FakeSource:
    """A source whose bundle.json lists what the test wants, with a sha256 that matches."""

    location = "fake"

    def __init__(self, manifest):
        self.manifest = json.dumps(manifest).encode()

    def read_manifest(self, version):
        return self.manifest

    def copy_file(self, version, name, out):
        out.write(b"data")


@pytest.mark.parametrize("name", ["../escape", ".hidden", "bundle.json", "a/b"])
def test_a_bundle_naming_a_file_outside_its_folder_is_refused(tmp_path, name):
    import hashlib

    source = FakeSource({"format": 1, "files": {name: hashlib.sha256(b"data").hexdigest()}})
    active = follow.Active("v1", hashlib.sha256(source.manifest).hexdigest())
    with pytest.raises(follow.Refused, match="not a plain file name"):
        follow.Cache(tmp_path / "cache").pull(source, active)
    assert not (tmp_path / "escape").exists()
    assert not list((tmp_path / "cache" / "versions").iterdir())  # no half-pulled folder left


def test_a_node_process_never_imports_torch_or_fastai(trained_dir, tmp_path):
    data_dir, version, _ = trained_dir
    script = f"""
import io, json, sys
from webapp.app import create_app
app = create_app({{"ROLE": "node", "MODEL_SOURCE": {str(registry.models_dir(data_dir))!r},
                  "MODEL_CACHE": {str(tmp_path / "cache")!r}}})
client = app.test_client()
picture = open({str(tmp_path / "red.jpg")!r}, "rb").read()
answer = client.post("/api/classify", data=picture, content_type="image/jpeg").get_json()
page = client.get("/").status_code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "fastai"))
print(json.dumps({{"model": answer["model"], "page": page, "heavy": heavy}}))
"""
    (tmp_path / "red.jpg").write_bytes(red_picture())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"model": version, "page": 200, "heavy": []}


def test_a_node_follows_the_admin_node_over_http_with_its_token(trained_copy, tmp_path):
    from tests.conftest import serving
    from webapp.model import node_tokens

    data_dir, v1, _ = trained_copy
    admin = make_app(data_dir)
    _, token = node_tokens.create(data_dir, "node-1")
    with serving(admin) as url:
        app = node_app(url, tmp_path / "cache", NODE_TOKEN=token)
        client = app.test_client()
        assert client.get("/readyz").get_json()["model"] == v1
        v2 = second_version(data_dir, v1)
        app.extensions["winnow.model"].follower.check()
        ready = client.get("/readyz").get_json()
        assert ready["model"] == v2 and ready["source"] == {
            **ready["source"], "location": url, "state": "ok", "active": v2, "last_error": None}
        assert classify(client)["model"] == v2
        # A wrong token: the admin answers 401, and the node says so while it serves on.
        stranger = node_app(url, app.config["MODEL_CACHE"], NODE_TOKEN="wn_wrong").test_client()
        ready = stranger.get("/readyz").get_json()
        assert ready["model"] == v2 and ready["source"]["state"] == "unreachable"
        assert "401" in ready["source"]["last_error"]
    # The admin node is gone: the node keeps serving what it has.
    app.extensions["winnow.model"].follower.check()
    ready = client.get("/readyz").get_json()
    assert ready["model"] == v2 and ready["source"]["state"] == "unreachable"
    assert classify(client)["model"] == v2
