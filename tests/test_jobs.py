"""Long work runs as a job in its own process: progress, outcome, cancel, death detected."""
import os
import time

import pytest

from webapp.jobs import runner as jobs

KINDS = {"count": "tests.job_kinds:count", "fail": "tests.job_kinds:fail",
         "wait": "tests.job_kinds:wait_cancel", "die": "tests.job_kinds:die"}


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


def test_cancel_stops_a_running_job_cleanly(tmp_path, kinds):
    job_id = jobs.start(tmp_path, "wait", {})
    wait_for(tmp_path, job_id, statuses=("running",))
    assert jobs.cancel(tmp_path, job_id)
    job = wait_for(tmp_path, job_id, timeout=10)
    assert job["status"] == "cancelled"
    assert not jobs.cancel(tmp_path, job_id)  # finished: nothing to cancel


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
