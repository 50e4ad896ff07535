"""Long work runs as a job in its own process: progress, outcome, cancel, death detected."""
import os
import random
import re
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from werkzeug import Request, Response

from tests.conftest import serving
from tests.pictures import jpeg, tinted
from webapp.core import db, images
from webapp.dataset import manifest
from webapp.ingest import downloads
from webapp.jobs import runner as jobs

KINDS = {"count": "tests.job_kinds:count", "fail": "tests.job_kinds:fail",
         "wait": "tests.job_kinds:wait_cancel", "die": "tests.job_kinds:die",
         "stuck": "tests.job_kinds:ignore_cancel", "deaf": "tests.job_kinds:deaf"}
STORE = {"VALID_PCT": 0.2, "SPLIT_SEED": 42, "MAX_PIXELS": images.DEFAULT_MAX_PIXELS}


@pytest.fixture
def kinds(monkeypatch):
    monkeypatch.setattr(jobs, "RUNNERS", {**jobs.RUNNERS, **KINDS})
    monkeypatch.setattr(jobs, "GROUPS", {**jobs.GROUPS, "wait": "model", "count": "model"})


def wait_for(data_dir, job_id, statuses=jobs.FINISHED, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs.get(data_dir, job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def wait_until_stuck(data_dir, job_id, timeout=10):
    """Wait until the job has made its last progress call before it stops listening."""
    deadline = time.monotonic() + timeout
    while jobs.get(data_dir, job_id)["phase"] != "stuck":
        assert time.monotonic() < deadline, jobs.read_log(data_dir, job_id)
        time.sleep(0.02)


@pytest.fixture
def signals(monkeypatch, tmp_path, kinds):
    """Record every signal the reaper sends to a process group (and still send it)."""
    sent, real = [], os.killpg

    def killpg(pid, sig):
        sent.append(sig)
        real(pid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    monkeypatch.setattr(jobs, "CANCEL_GRACE_SECONDS", 1.0)
    monkeypatch.setattr(jobs, "KILL_GRACE_SECONDS", 1.0)
    yield sent
    # A failed test must not leave a 60-second job behind it.
    with db.session(tmp_path) as conn:
        rows = conn.execute("SELECT id, pid FROM jobs").fetchall()
    for row in rows:
        if jobs._is_job_process(row["pid"], tmp_path, row["id"]):
            real(row["pid"], signal.SIGKILL)


def pid_of(data_dir, job_id):
    with db.session(data_dir) as conn:
        return conn.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()["pid"]


def group_gone(pgid, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_job_runs_in_its_own_process_and_reports_progress_items_and_result(tmp_path, kinds):
    job_id = jobs.start(tmp_path, "count", {"n": 5})
    job = wait_for(tmp_path, job_id)
    assert job["status"] == "succeeded", jobs.read_log(tmp_path, job_id)
    assert job["message"] == "Counted to 5."
    assert job["result"] == {"counted": 5}
    assert (job["done"], job["total"], job["percent"], job["phase"]) == (5, 5, 100.0, "counting")
    assert job["detail"] == {"last": 5}
    items = jobs.items(tmp_path, job_id)
    assert [i["key"] for i in items] == [f"item {i}" for i in range(1, 6)]
    assert jobs.item_counts(tmp_path, job_id) == {"stored": 3, "duplicate": 2}
    log = jobs.read_log(tmp_path, job_id)
    assert "count" in log and "succeeded" in log


def test_a_failing_job_is_marked_failed_with_its_reason_and_traceback_logged(tmp_path, kinds):
    job_id = jobs.start(tmp_path, "fail", {})
    job = wait_for(tmp_path, job_id)
    assert job["status"] == "failed"
    assert job["message"] == "RuntimeError: the data was not there"
    assert "Traceback" in jobs.read_log(tmp_path, job_id)


def test_cancel_stops_a_running_job_cleanly(tmp_path, kinds, signals):
    job_id = jobs.start(tmp_path, "wait", {})
    wait_for(tmp_path, job_id, statuses=("running",))
    assert jobs.cancel(tmp_path, job_id)
    job = wait_for(tmp_path, job_id, timeout=10)
    assert job["status"] == "cancelled"
    assert job["message"] == "Cancelled; nothing it had finished was lost."
    assert not jobs.cancel(tmp_path, job_id)  # finished: nothing to cancel
    time.sleep(jobs.CANCEL_GRACE_SECONDS + 1)  # the watcher has looked again since
    assert signals == []  # it honoured the flag: no signal was needed


def test_a_queued_job_is_cancelled_at_once(tmp_path, kinds):
    with db.session(tmp_path) as conn:
        job_id = jobs.create(conn, "count", {"n": 1})
    assert jobs.cancel(tmp_path, job_id)
    job = jobs.get(tmp_path, job_id)
    assert (job["status"], job["message"]) == ("cancelled", "Cancelled before it started.")
    jobs.execute(tmp_path, job_id)  # a process that starts late finds it taken and does nothing
    assert jobs.items(tmp_path, job_id) == []


def test_a_store_made_before_cancel_was_timed_gets_the_column(tmp_path, kinds):
    schema = (Path(db.__file__).parent / "schema.sql").read_text()
    table = re.search(r"CREATE TABLE IF NOT EXISTS jobs \(.*?\n\);", schema, re.S).group()
    before = re.sub(r",\n\s*cancel_requested REAL[^\n]*", "", table)
    assert before != table
    conn = sqlite3.connect(tmp_path / db.DB_NAME)
    conn.execute(before)
    conn.close()
    with db.session(tmp_path) as conn:
        job_id = jobs.create(conn, "count", {"n": 1})
    assert jobs.cancel(tmp_path, job_id)
    assert jobs.get(tmp_path, job_id)["status"] == "cancelled"


def test_a_job_stuck_past_the_grace_is_stopped_by_sigterm_and_cancelled(tmp_path, kinds,
                                                                         signals):
    job_id = jobs.start(tmp_path, "stuck", {})
    wait_until_stuck(tmp_path, job_id)
    pid = pid_of(tmp_path, job_id)
    asked = time.monotonic()
    assert jobs.cancel(tmp_path, job_id)
    job = wait_for(tmp_path, job_id, timeout=jobs.CANCEL_GRACE_SECONDS + 5)
    assert time.monotonic() - asked >= jobs.CANCEL_GRACE_SECONDS  # the flag had its chance
    assert job["status"] == "cancelled", jobs.read_log(tmp_path, job_id)
    assert "did not respond to Cancel" in job["message"] and "interrupted" in job["message"]
    assert signals == [signal.SIGTERM]
    assert group_gone(pid)
    assert "stopped by SIGTERM" in jobs.read_log(tmp_path, job_id)


def test_a_job_deaf_to_sigterm_is_killed_and_keeps_what_it_stored(tmp_path, kinds, signals):
    job_id = jobs.start(tmp_path, "deaf", {"store": STORE})
    wait_until_stuck(tmp_path, job_id)
    pid = pid_of(tmp_path, job_id)
    assert jobs.cancel(tmp_path, job_id)
    job = wait_for(tmp_path, job_id,
                   timeout=jobs.CANCEL_GRACE_SECONDS + jobs.KILL_GRACE_SECONDS + 5)
    assert job["status"] == "cancelled"
    assert "did not respond to Cancel" in job["message"] and "killed" in job["message"]
    assert "cleaned.csv was rewritten from the store" in job["message"]
    assert signal.SIGKILL in signals and signals[0] == signal.SIGTERM
    assert group_gone(pid)
    [item] = jobs.items(tmp_path, job_id)
    assert item["status"] == "stored"
    # The job never reached its own cleaned.csv rewrite; the reaper's caught up with the store.
    csv = (tmp_path / manifest.CLEANED_CSV).read_text().splitlines()
    assert len(csv) == 2 and csv[1].split(",")[1] == "cats"


def test_a_download_stuck_in_a_slow_fetch_stops_soon_after_cancel(tmp_path, signals):
    release = threading.Event()

    @Request.application
    def site(request):
        if request.path == "/hangs.jpg":  # answers, but only long after anyone cares
            release.wait(30)
        return Response(jpeg(tinted("red", random.Random(1), 48)), mimetype="image/jpeg")

    settings = {**STORE, "FETCH_ALLOW_NETS": "127.0.0.1/32", "FETCH_MAX_BYTES": 60_000,
                "FETCH_DEADLINE": 60.0}
    with serving(site) as base:
        urls = [f"{base}/fine.jpg", f"{base}/hangs.jpg", f"{base}/never.jpg"]
        job_id = jobs.start(tmp_path, "download",
                            downloads.job_params(settings, urls, "bears", workers=1))
        try:
            deadline = time.monotonic() + 15
            while jobs.get(tmp_path, job_id)["done"] < 1:
                assert time.monotonic() < deadline, jobs.read_log(tmp_path, job_id)
                time.sleep(0.05)
            pid = pid_of(tmp_path, job_id)
            assert jobs.cancel(tmp_path, job_id)
            job = wait_for(tmp_path, job_id, timeout=jobs.CANCEL_GRACE_SECONDS + 5)
        finally:
            release.set()
    assert job["status"] == "cancelled", jobs.read_log(tmp_path, job_id)
    assert "did not respond to Cancel" in job["message"]
    assert group_gone(pid)
    assert [(i["key"], i["status"]) for i in jobs.items(tmp_path, job_id)] == [
        (urls[0], "stored")]
    # SIGTERM let the download's own cleanup run: cleaned.csv has the picture it stored.
    csv = (tmp_path / manifest.CLEANED_CSV).read_text().splitlines()
    assert len(csv) == 2 and csv[1].split(",")[1] == "bears"


def test_a_foreground_job_is_never_signalled_by_the_web(tmp_path, kinds, signals, monkeypatch):
    monkeypatch.setattr(jobs, "CANCEL_GRACE_SECONDS", 0.2)
    monkeypatch.setattr(jobs, "KILL_GRACE_SECONDS", 0.2)
    outcome = {}
    cli = threading.Thread(target=lambda: outcome.update(
        jobs.run_here(tmp_path, "stuck", {"seconds": 3})))
    cli.start()
    deadline = time.monotonic() + 10
    while not jobs.recent(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    job_id = jobs.recent(tmp_path)[0]["id"]
    wait_until_stuck(tmp_path, job_id)
    assert jobs.cancel(tmp_path, job_id)
    for _ in range(10):  # well past both graces, the web keeps looking
        time.sleep(0.15)
        assert jobs.get(tmp_path, job_id)["status"] == "running"
    cli.join(timeout=10)
    assert signals == []
    assert outcome["status"] == "cancelled"  # the CLI's job stopped at its own next step
    assert outcome["message"] == "Cancelled; nothing it had finished was lost."


def test_a_reused_pid_is_never_signalled(tmp_path, kinds, signals):
    # The job's process died and its pid went to an unrelated program, a group leader too.
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with db.session(tmp_path) as conn:
            job_id = jobs.create(conn, "count", {"n": 1})
            conn.execute("UPDATE jobs SET status = 'running', pid = ?, heartbeat = ?, cancel = 1, "
                         "cancel_requested = ? WHERE id = ?",
                         (other.pid, time.time(), time.time() - 60, job_id))
        jobs.get(tmp_path, job_id)
        assert signals == [] and other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_killed_job_process_is_detected_and_its_log_kept(tmp_path, kinds):
    job_id = jobs.start(tmp_path, "die", {})
    job = wait_for(tmp_path, job_id, timeout=15)
    assert job["status"] == "failed"
    assert "stopped without finishing" in job["message"]
    assert "about to be killed" in jobs.read_log(tmp_path, job_id)


def test_a_silent_job_is_marked_failed_even_if_its_pid_looks_alive(tmp_path, kinds, monkeypatch):
    from webapp.core import db

    with db.session(tmp_path) as conn:
        job_id = jobs.create(conn, "count", {"n": 1})
        conn.execute("UPDATE jobs SET status = 'running', pid = ?, heartbeat = ? WHERE id = ?",
                     (os.getpid(), time.time() - jobs.STALE_SECONDS - 1, job_id))
    assert jobs.get(tmp_path, job_id)["status"] == "failed"


def test_jobs_of_one_group_never_overlap(tmp_path, kinds):
    first = jobs.start(tmp_path, "wait", {})
    with pytest.raises(jobs.JobRefused) as refused:
        jobs.start(tmp_path, "count", {"n": 1})
    assert refused.value.running_id == first
    assert f"#{first}" in str(refused.value)
    jobs.cancel(tmp_path, first)
    wait_for(tmp_path, first)
    second = jobs.start(tmp_path, "count", {"n": 1})
    assert wait_for(tmp_path, second)["status"] == "succeeded"


def test_the_cli_runs_the_same_job_in_the_foreground_with_updates(tmp_path, kinds):
    seen = []
    job = jobs.run_here(tmp_path, "count", {"n": 3}, on_update=lambda s: seen.append(s["done"]))
    assert job["status"] == "succeeded" and job["result"] == {"counted": 3}
    assert seen[:4] == [0, 1, 2, 3]
    assert jobs.recent(tmp_path)[0]["id"] == job["id"]


def test_unknown_kinds_are_refused(tmp_path):
    from webapp.core import db

    with db.session(tmp_path) as conn, pytest.raises(ValueError):
        jobs.create(conn, "rm -rf", {})


def test_an_admin_watches_a_job_page_and_its_json_and_can_cancel_it(app, admin, client, kinds):
    data_dir = app.config["DATA_DIR"]
    job_id = jobs.start(data_dir, "wait", {})
    wait_for(data_dir, job_id, statuses=("running",))
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "<progress" in page and f"/jobs/{job_id}.json" in page and "Cancel" in page
    status = client.get(f"/jobs/{job_id}.json").get_json()
    assert status["status"] == "running" and status["phase"] == "waiting" and status["total"] == 600
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 400  # no CSRF token
    r = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": admin.csrf_token()})
    assert r.status_code == 303
    assert wait_for(data_dir, job_id, timeout=10)["status"] == "cancelled"
    assert f">{job_id}</a>" in client.get("/jobs/").get_data(as_text=True)


def test_job_items_are_polled_incrementally(app, admin, client, kinds):
    data_dir = app.config["DATA_DIR"]
    job = jobs.run_here(data_dir, "count", {"n": 4})
    everything = client.get(f"/jobs/{job['id']}.json").get_json()
    assert [i["key"] for i in everything["items"]] == ["item 1", "item 2", "item 3", "item 4"]
    later = client.get(f"/jobs/{job['id']}.json?after={everything['items'][1]['id']}").get_json()
    assert [i["key"] for i in later["items"]] == ["item 3", "item 4"]
    assert later["counts"] == {"stored": 2, "duplicate": 2}


def test_job_pages_need_a_login_and_unknown_jobs_are_404(app, client, admin):
    assert client.get("/jobs/999").status_code == 404
    assert client.get("/jobs/999.json").get_json() == {"error": "There is no job #999."}
    anonymous = app.test_client()
    for path in ("/jobs/", "/jobs/1", "/jobs/1.json"):
        assert anonymous.get(path).status_code in (302, 401)
    assert anonymous.post("/jobs/1/cancel").status_code in (302, 400, 401)
