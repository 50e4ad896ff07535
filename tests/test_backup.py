"""Backup and restore: a copy taken while the app serves and labels, restored into a new server."""
import json
import random
import stat
import threading
import time

import pytest

from tests.conftest import AdminSession, make_app
from tests.pictures import jpeg, tinted
from webapp.core import db
from webapp.dataset import backup, manifest
from webapp.dataset.store import Dataset, StoreError
from webapp.model import registry


class Labeler(threading.Thread):
    """An admin at work: relabels, deletes, restores and adds images until told to stop."""

    def __init__(self, data_dir, seconds=30.0):
        super().__init__(daemon=True)
        self.data_dir, self.deadline = data_dir, time.monotonic() + seconds  # a bound, not a plan
        self.changes, self.error = 0, None
        self.stop = threading.Event()

    def run(self):
        ds, rng = Dataset(self.data_dir), random.Random(7)
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                self.step(ds, rng)
                self.changes += 1
        except Exception as e:  # reported by the test, not lost in the thread
            self.error = e
        finally:
            ds.close()

    def step(self, ds, rng):
        live = [r["id"] for r in ds.conn.execute("SELECT id FROM images WHERE deleted IS NULL")]
        gone = [r["id"] for r in ds.conn.execute("SELECT id FROM images WHERE deleted NOT NULL")]
        action = rng.choice(["relabel", "relabel", "delete", "restore", "add"])
        try:
            if action == "add":
                label = rng.choice(["red", "blue"])
                ds.add_image(jpeg(tinted(label, rng)), label=label, source="test")
            elif action == "restore" and gone:
                ds.change("restore", image_id=rng.choice(gone))
            elif action == "delete" and len(live) > 20:
                ds.change("delete", image_id=rng.choice(live))
            elif live:
                ds.change("relabel", image_id=rng.choice(live), label=rng.choice(["red", "blue"]))
        except StoreError:
            pass  # relabelled to the label it had: nothing to do


def slowly(done, total, phase=None, message=None):
    """Copy like a slow disk, so the labeler gets to change things during the copy."""
    if phase == "images":
        time.sleep(0.02)


def assert_whole(data_dir):
    """Check every image row has its file where the row says, and cleaned.csv matches the db."""
    ds = Dataset(data_dir)
    try:
        rows = ds.conn.execute("SELECT * FROM images").fetchall()
        assert rows and all(ds.file_path(r).is_file() for r in rows)
        assert (data_dir / "cleaned.csv").read_text() == manifest.render_cleaned_csv(ds.labeled())
        return {r["id"]: (r["label"], bool(r["deleted"])) for r in rows}
    finally:
        ds.close()


def test_a_backup_taken_while_labeling_restores_into_a_server_with_the_same_model(
        trained_copy, tmp_path):
    data_dir, version, _ = trained_copy
    source = AdminSession(make_app(data_dir).test_client())
    assert source.login().status_code == 302
    labeler = Labeler(data_dir)
    labeler.start()
    while labeler.changes < 10 and labeler.is_alive():
        time.sleep(0.01)
    before = labeler.changes
    made = backup.backup(data_dir, tmp_path / "backup", on_progress=slowly)  # about 2 s
    during = labeler.changes - before
    labeler.stop.set()
    labeler.join(timeout=30)
    assert labeler.error is None and not labeler.is_alive()
    assert during > 0, "the labeler made no change while the backup ran"
    assert made["complete"] and made["missing"] == [] and made["problems"] == []
    assert made["counts"]["active_version"] == version

    restored = tmp_path / "restored"
    r = make_app(restored).test_cli_runner().invoke(args=["restore", str(tmp_path / "backup")])
    assert r.exit_code == 0, r.output
    assert f"active: {version}" in r.output
    rows = assert_whole(restored)
    assert len([1 for _, deleted in rows.values() if not deleted]) == made["counts"]["images"]
    assert stat.S_IMODE((restored / "secret_key").stat().st_mode) == 0o600

    app = make_app(restored, LOAD_MODEL=True)
    client = app.test_client()
    ready = client.get("/readyz").get_json()
    # The version's serving bundle came along and passed its checks here.
    assert (ready["status"], ready["model"], ready["runtime"]) == ("ready", version, "onnx")
    # The secret key came along: the admin's session from the old server still works.
    client.set_cookie("session", source.client.get_cookie("session").value)
    assert client.get("/admin/").status_code == 200


def test_an_image_deleted_after_the_database_copy_is_found_in_the_trash(dataset, tmp_path):
    rng = random.Random(3)
    ids = [dataset.add_image(jpeg(tinted("red", rng)), label="red").image_id for _ in range(4)]
    dataset.change("delete", image_id=ids[0])

    def meanwhile(done, total, phase=None, message=None):
        if phase == "database" and done == total:  # the copy's rows are fixed from here on
            dataset.change("delete", image_id=ids[1])
            dataset.change("restore", image_id=ids[0])

    made = backup.backup(dataset.data_dir, tmp_path / "backup", on_progress=meanwhile)
    assert made["missing"] == [] and made["problems"] == []
    rows = assert_whole(tmp_path / "backup")
    assert rows[ids[0]] == ("red", True) and rows[ids[1]] == ("red", False)


def test_a_model_activated_after_the_database_copy_is_not_served_by_the_backup(dataset,
                                                                              tmp_path):
    def register(version):
        folder = registry.models_dir(dataset.data_dir) / version
        folder.mkdir(parents=True)
        (folder / registry.EXPORT).write_bytes(version.encode())  # stands in for a learner
        registry.record_version(dataset.data_dir, folder, {}, "test")
        registry.activate(dataset.data_dir, version)

    register("v1")

    def meanwhile(done, total, phase=None, message=None):
        if phase == "database" and done == total:  # a training run ends during the backup
            register("v2")

    made = backup.backup(dataset.data_dir, tmp_path / "backup", on_progress=meanwhile)
    assert made["counts"]["active_version"] == "v1"
    assert made["problems"] == ["model v2 is newer than the copied database; the backup serves v1"]
    assert registry.active_version(tmp_path / "backup") == "v1"
    assert registry.verified_export_path(tmp_path / "backup", "v1").read_bytes() == b"v1"
    assert not (tmp_path / "backup" / "models" / "v2").exists()


def test_backup_and_restore_from_the_terminal(runner, app, tmp_path):
    ds = Dataset(app.config["DATA_DIR"])
    ds.add_image(jpeg(tinted("blue", random.Random(1))), label="blue")
    ds.close()
    r = runner.invoke(args=["backup", str(tmp_path / "backup")])
    assert r.exit_code == 0, r.output
    assert "backed up 1 images (1 labeled)" in r.output and "secret key is included" in r.output
    assert "thumbs/" in r.output  # says what it leaves out
    for private in ("", "secret_key", "winnow.sqlite3"):  # it holds the key and password hash
        mode = stat.S_IMODE((tmp_path / "backup" / private).stat().st_mode)
        assert mode & 0o077 == 0, (private, oct(mode))
    restored = make_app(tmp_path / "restored")
    r = restored.test_cli_runner().invoke(args=["restore", str(tmp_path / "backup")])
    assert r.exit_code == 0, r.output
    assert assert_whole(tmp_path / "restored")
    assert stat.S_IMODE((tmp_path / "restored" / "winnow.sqlite3").stat().st_mode) == 0o600
    assert restored.test_client().get("/readyz").status_code == 503  # no model was trained


def test_backup_refuses_a_destination_that_is_not_empty(runner, tmp_path):
    dest = tmp_path / "backup"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    r = runner.invoke(args=["backup", str(dest)])
    assert r.exit_code != 0 and "is not empty" in r.output
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.unlink(), "did not finish"),
    (lambda m: m.write_text('{"format": 1, "comp'), "is unreadable"),
    (lambda m: m.write_text(json.dumps({"format": 1})), "does not mark the backup complete"),
])
def test_restore_refuses_an_incomplete_backup(runner, tmp_path, damage, message):
    assert runner.invoke(args=["backup", str(tmp_path / "backup")]).exit_code == 0
    damage(tmp_path / "backup" / backup.MANIFEST)
    target = make_app(tmp_path / "restored")
    r = target.test_cli_runner().invoke(args=["restore", str(tmp_path / "backup")])
    assert r.exit_code != 0 and message in r.output
    assert not (tmp_path / "restored" / "images").exists()


def test_restore_refuses_a_data_dir_that_holds_data(runner, app, tmp_path):
    assert runner.invoke(args=["backup", str(tmp_path / "backup")]).exit_code == 0
    ds = Dataset(app.config["DATA_DIR"])
    ds.add_image(jpeg(tinted("red", random.Random(2))), label="kept")
    ds.close()
    r = runner.invoke(args=["restore", str(tmp_path / "backup")])
    assert r.exit_code != 0 and "is not empty (it holds" in r.output and "images" in r.output
    ds = Dataset(app.config["DATA_DIR"])
    assert ds.class_names() == ["kept"]
    ds.close()


def test_restore_refuses_a_database_that_holds_data(runner, tmp_path):
    assert runner.invoke(args=["backup", str(tmp_path / "backup")]).exit_code == 0
    target = make_app(tmp_path / "other")
    with db.session(tmp_path / "other") as conn:  # another install's database, copied in
        conn.execute("INSERT INTO classes(name, created) VALUES ('kept', '2026-01-01')")
    r = target.test_cli_runner().invoke(args=["restore", str(tmp_path / "backup")])
    assert r.exit_code != 0 and "its database already holds classes" in r.output
