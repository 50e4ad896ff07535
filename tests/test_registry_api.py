"""A serving node reads the registry with its token: the active version, its bundle, its files."""
import hashlib
import json
import shutil

import pytest

from tests.conftest import AdminSession, make_app
from tests.test_app import second_version
from webapp.core import db
from webapp.model import bundle, node_tokens, registry

CHALLENGE = 'Bearer realm="winnow-registry"'


class Node:
    """A serving node's view of the admin: its client, its token, the admin's data dir."""

    def __init__(self, app, data_dir, version, metrics):
        self.client, self.data_dir, self.version, self.metrics = (app.test_client(), data_dir,
                                                                  version, metrics)
        self.token_id, self.token = node_tokens.create(data_dir, "node-1")

    def get(self, path, token=None):
        token = self.token if token is None else token
        return self.client.get(path, headers={"Authorization": f"Bearer {token}"})

    def bundle_dir(self, version=None):
        return bundle.bundle_dir(registry.models_dir(self.data_dir) / (version or self.version))


@pytest.fixture
def node(trained_copy):
    data_dir, version, metrics = trained_copy
    return Node(make_app(data_dir), data_dir, version, metrics)


def assert_refused(r, status, words):
    assert r.status_code == status, r.data
    assert r.mimetype == "application/json" and words in r.get_json()["error"]


NOT_A_LIVE_TOKEN = [None, "", "Bearer", "Bearer  ", "Basic bm9kZTpwdw==", "Bearer wn_not-a-token",
                    "Bearer wn_a wn_b", "wn_bare"]


@pytest.mark.parametrize("path", ["/registry/active", "/registry/{v}/bundle",
                                  "/registry/{v}/bundle/model.onnx",
                                  "/registry/19990101-000000/bundle", "/registry/nowhere"])
def test_a_node_without_a_live_token_is_turned_away_before_anything_else(node, path):
    for header in NOT_A_LIVE_TOKEN:
        headers = {} if header is None else {"Authorization": header}
        r = node.client.get(path.format(v=node.version), headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == CHALLENGE, header
        assert r.get_json()["error"]
        assert b"sha256" not in r.data and b"files" not in r.data


def test_a_revoked_token_stops_working_at_once(node):
    assert node.get("/registry/active").status_code == 200
    node_tokens.revoke(node.data_dir, node.token_id)
    r = node.get("/registry/active")
    assert_refused(r, 401, "revoked")
    assert r.headers["WWW-Authenticate"] == CHALLENGE
    assert node.get(f"/registry/{node.version}/bundle").status_code == 401


def test_an_admin_login_alone_does_not_open_the_registry(node):
    admin = AdminSession(node.client)
    assert admin.login().status_code == 302
    assert node.client.get("/admin/").status_code == 200
    r = node.client.get("/registry/active")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == CHALLENGE


def test_a_node_learns_the_active_version_and_its_bundle_sha256(node):
    r = node.get("/registry/active")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    recorded = registry.version_record(node.data_dir, node.version)["metrics"]["bundle"]["sha256"]
    assert r.get_json() == {"version": node.version, "bundle_sha256": recorded, "reason": None}
    assert recorded == node.metrics["bundle"]["sha256"]


def test_a_node_downloads_the_bundle_and_every_file_it_lists(node):
    sha = node.get("/registry/active").get_json()["bundle_sha256"]
    r = node.get(f"/registry/{node.version}/bundle")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.data == (node.bundle_dir() / "bundle.json").read_bytes()
    assert hashlib.sha256(r.data).hexdigest() == sha
    listed = json.loads(r.data)["files"]
    assert {"model.onnx", "reference.npz"} <= set(listed)
    for name, file_sha in listed.items():
        f = node.get(f"/registry/{node.version}/bundle/{name}")
        assert f.status_code == 200 and f.mimetype == "application/octet-stream"
        assert f.data == (node.bundle_dir() / name).read_bytes()
        assert int(f.headers["Content-Length"]) == len(f.data)
        assert hashlib.sha256(f.data).hexdigest() == file_sha


@pytest.mark.parametrize("name", ["../../export.pkl", "export.pkl", "bundle.json/../x",
                                  "bundle.json", "../metrics.json", "..%2F..%2Fexport.pkl",
                                  "model.onnx/", "./model.onnx", "MODEL.ONNX"])
def test_only_the_files_bundle_json_lists_can_be_read(node, name):
    r = node.get(f"/registry/{node.version}/bundle/{name}")
    assert_refused(r, 404, "")
    export = (registry.models_dir(node.data_dir) / node.version / "export.pkl").read_bytes()
    assert export[:64] not in r.data


@pytest.mark.parametrize("version", ["19990101-000000", "..x", "-rf", "a" * 65, "v%00"])
def test_unknown_and_malformed_versions_are_404(node, version):
    assert_refused(node.get(f"/registry/{version}/bundle"), 404, "")
    assert_refused(node.get(f"/registry/{version}/bundle/model.onnx"), 404, "")


def test_with_no_active_version_the_node_is_told_so(node):
    (registry.models_dir(node.data_dir) / "ACTIVE").unlink()
    assert node.get("/registry/active").get_json() == {
        "version": None, "bundle_sha256": None, "reason": "no model is active yet"}


def test_an_active_version_without_a_bundle_says_why_and_sends_nothing(node):
    old = second_version(node.data_dir, node.version)  # registered as before serving bundles
    registry.activate(node.data_dir, old)
    body = node.get("/registry/active").get_json()
    assert body["version"] == old and body["bundle_sha256"] is None
    assert "no serving bundle" in body["reason"]
    assert_refused(node.get(f"/registry/{old}/bundle"), 404, "no usable serving bundle")
    assert_refused(node.get(f"/registry/{old}/bundle/model.onnx"), 404, "no usable serving bundle")


def test_a_refused_bundle_is_not_offered(node):
    record = registry.version_record(node.data_dir, node.version)
    metrics = {**record["metrics"], "bundle": {"status": "refused", "reason": "parity 0.3"}}
    with db.session(node.data_dir) as conn:
        conn.execute("UPDATE models SET metrics = ? WHERE version = ?",
                     (json.dumps(metrics), node.version))
    body = node.get("/registry/active").get_json()
    assert body["bundle_sha256"] is None and "refused: parity 0.3" in body["reason"]
    assert_refused(node.get(f"/registry/{node.version}/bundle"), 404, "refused")


def test_a_version_is_published_only_once_it_is_ready(node):
    new_dir = registry.new_version_dir(node.data_dir)
    src = registry.models_dir(node.data_dir) / node.version
    shutil.copyfile(src / registry.EXPORT, new_dir / registry.EXPORT)
    shutil.copytree(node.bundle_dir(), bundle.bundle_dir(new_dir))
    pending = registry.record_version(node.data_dir, new_dir, {"bundle": node.metrics["bundle"]},
                                      "trained", status=registry.PENDING)
    assert_refused(node.get(f"/registry/{pending}/bundle"), 404, "not finished")
    assert_refused(node.get(f"/registry/{pending}/bundle/model.onnx"), 404, "not finished")
    registry.mark_ready(node.data_dir, pending)
    assert node.get(f"/registry/{pending}/bundle").status_code == 200
    assert node.get(f"/registry/{pending}/bundle/model.onnx").status_code == 200


def test_a_bundle_changed_on_disk_is_never_sent(node):
    manifest = node.bundle_dir() / "bundle.json"
    manifest.write_bytes(manifest.read_bytes() + b" ")
    assert_refused(node.get(f"/registry/{node.version}/bundle"), 409,
                   "the bundle on disk does not match the registry")
    assert_refused(node.get(f"/registry/{node.version}/bundle/model.onnx"), 409, "does not match")
    # The registry's own word is unchanged: the node keeps asking for the recorded bundle.
    assert node.get("/registry/active").get_json()["bundle_sha256"] == node.metrics["bundle"][
        "sha256"]


def test_a_node_polling_is_not_held_to_the_public_limits(trained_copy):
    data_dir, version, metrics = trained_copy
    app = make_app(data_dir, CLASSIFY_RATE_LIMIT="2 per minute", SGD_RATE_LIMIT="2 per minute")
    node = Node(app, data_dir, version, metrics)
    assert all(node.get("/registry/active").status_code == 200 for _ in range(6))
    assert node.get(f"/registry/{version}/bundle").status_code == 200


def test_a_node_request_marks_its_token_used(node):
    assert node_tokens.listing(node.data_dir)[0]["last_used"] is None
    node.get("/registry/active")
    assert node_tokens.listing(node.data_dir)[0]["last_used"] is not None
