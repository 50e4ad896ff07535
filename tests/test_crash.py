"""A training job killed at any moment: after a restart the store, cleaned.csv and the served
model are as they were, and nothing the killed run made is left behind or can be served."""
import os
import signal
import sqlite3
import time

import pytest

from tests.conftest import AdminSession, make_app
from tests.test_admin_training import model_dirs, tiny_params
from webapp.core import db, processes
from webapp.dataset.manifest import CLEANED_CSV, render_cleaned_csv
from webapp.dataset.store import Dataset
from webapp.jobs import runner as jobs
from webapp.model import registry

POLL = 0.05  # seconds: the export phase lasts about a second here


def _row(data_dir, job_id):
    """Read the job's row straight from the store: jobs.get would reap it, as a restart does."""
    with db.session(data_dir) as conn:
        return conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()


def _pending(data_dir):
    with db.session(data_dir) as conn:
        return [r["version"] for r in
                conn.execute("SELECT version FROM models WHERE status = 'pending'")]


def _reached(data_dir, job_id, point):
    if point == "pending":  # registered, not yet scored and marked ready
        return bool(_pending(data_dir))
    if point == "version folder":  # export.pkl being written, not yet registered
        return bool(registry.unregistered_dirs(data_dir))
    return _row(data_dir, job_id)["phase"] == point


def _kill_at(data_dir, job_id, point, timeout=120):
    """SIGKILL the job's process group as soon as it reaches `point`; wait until it is gone."""
    deadline = time.monotonic() + timeout
    while not _reached(data_dir, job_id, point):
        row = _row(data_dir, job_id)
        assert row["status"] == "running" or row["status"] == "queued", (
            f"the job ended before {point}: {row['message']}\n{jobs.read_log(data_dir, job_id)}")
        assert time.monotonic() < deadline, jobs.read_log(data_dir, job_id)
        time.sleep(POLL)
    pid = _row(data_dir, job_id)["pid"]
    os.killpg(pid, signal.SIGKILL)  # as the out-of-memory killer or a power cut would
    while processes.pid_alive(pid):
        time.sleep(POLL)


@pytest.mark.parametrize("point", ["from scratch", "export", "version folder", "scoring",
                                   "pending"])
def test_a_training_killed_at_any_point_changes_nothing_after_a_restart(trained_copy, point):
    data_dir, v1, _ = trained_copy
    before = model_dirs(data_dir)
    job_id = jobs.start(data_dir, "train", tiny_params(fine_tune_epochs=0, activate=True))
    _kill_at(data_dir, job_id, point)
    # The kill did leave something behind to clean up.
    if point in ("scoring", "pending"):
        assert _pending(data_dir), jobs.read_log(data_dir, job_id)
    elif point == "version folder":
        assert registry.unregistered_dirs(data_dir), jobs.read_log(data_dir, job_id)
    else:
        assert list((data_dir / "tmp").iterdir()), jobs.read_log(data_dir, job_id)
    assert _row(data_dir, job_id)["status"] == "running"

    client = make_app(data_dir, LOAD_MODEL=True).test_client()  # the restart

    with db.session(data_dir) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    dataset = Dataset(data_dir)
    try:
        rendered = render_cleaned_csv(dataset.labeled())
    finally:
        dataset.close()
    assert (data_dir / CLEANED_CSV).read_text() == rendered
    ready = client.get("/readyz").get_json()
    assert (ready["status"], ready["model"], ready["runtime"]) == ("ready", v1, "onnx")
    assert registry.active_version(data_dir) == v1
    assert _pending(data_dir) == []
    assert [v["version"] for v in registry.versions(data_dir, include_pending=True)] == [v1]
    assert model_dirs(data_dir) == before
    assert list((data_dir / "tmp").iterdir()) == []
    job = jobs.get(data_dir, job_id)
    assert job["status"] == "failed" and "stopped without finishing" in job["message"]


def test_a_pending_version_is_shown_but_cannot_be_served(trained_copy):
    data_dir, v1, _ = trained_copy
    folder = registry.new_version_dir(data_dir)
    (folder / registry.EXPORT).write_bytes(
        (registry.models_dir(data_dir) / v1 / registry.EXPORT).read_bytes())
    v2 = registry.record_version(data_dir, folder, {"error_rate": 0.5}, "trained",
                                 status=registry.PENDING)
    # A train job is running it: neither the listing nor a start-up may take it away.
    with db.session(data_dir) as conn:
        conn.execute("INSERT INTO jobs(kind, params, status, actor, created, heartbeat, pid) "
                     "VALUES ('train', '{}', 'running', 'test', ?, ?, ?)",
                     (time.time(), time.time(), os.getpid()))
    assert [v["version"] for v in registry.versions(data_dir)] == [v1]
    assert [v["version"] for v in registry.versions(data_dir, include_pending=True)] == [v2, v1]
    with pytest.raises(registry.ModelError, match=rf"model {v2} is not finished yet \(pending\)"):
        registry.activate(data_dir, v2)
    assert registry.previous_version(data_dir) is None

    admin = AdminSession(make_app(data_dir).test_client())
    admin.login()
    page = admin.client.get("/admin/").get_data(as_text=True)
    row = page.split(f'data-version="{v2}"')[1].split("</tr>")[0]
    assert "pending (training, not yet scored)" in row and "Activate" not in row

    registry.mark_ready(data_dir, v2)
    registry.activate(data_dir, v2)
    assert registry.active_version(data_dir) == v2


def test_versions_in_a_store_made_before_pending_existed_read_as_ready(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / db.DB_NAME)
    conn.execute("CREATE TABLE models (version TEXT PRIMARY KEY, created TEXT NOT NULL, "
                 "source TEXT NOT NULL, arch TEXT, size INTEGER, sha256 TEXT NOT NULL, "
                 "metrics TEXT NOT NULL)")
    conn.execute("INSERT INTO models VALUES ('old', '2024-01-01', 'trained', 'resnet18', 32, "
                 "'ab', '{}')")
    conn.commit()
    conn.close()
    assert [(v["version"], v["status"]) for v in registry.versions(data_dir)] == [("old", "ready")]


def test_a_killed_import_leaves_no_half_made_version_after_a_restart(tmp_path):
    """An import job killed between making its version folder and registering it."""
    import time

    from webapp.core import db
    from webapp.jobs import recovery
    from webapp.model import registry

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    started = time.time()
    half_made = registry.new_version_dir(data_dir)
    (half_made / "export.pkl").write_bytes(b"half")
    with db.session(data_dir) as conn:
        conn.execute("INSERT INTO jobs(kind, params, status, actor, created, started, finished) "
                     "VALUES ('import', '{}', 'failed', 'admin', ?, ?, ?)",
                     (started, started, time.time()))
    assert recovery.sweep_training(data_dir) == [half_made.name]
    assert not half_made.exists()
