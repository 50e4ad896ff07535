"""Long work (downloads, training, scoring) as jobs: a row in the store and its own OS process.

A job is started with `start()` (from a web request: a new Python process runs it, never a
thread in a web worker) or run in the foreground with `run_here()` (the CLI). Either way the
kind's runner gets a `Job` handle: it reports progress and per-item outcomes to the job's row,
checks for cancellation, and returns a result. A heartbeat thread keeps the row fresh; a running
job whose process is gone or whose heartbeat is stale is marked failed (`reap`), its log kept
in `jobs/<id>.log` under the data directory.

Cancel sets a flag the job checks at its next step. A job process that has not stopped
CANCEL_GRACE_SECONDS after Cancel (stuck in a slow fetch) is sent SIGTERM, which raises `Stopped`
inside it so its cleanup runs, and SIGKILL KILL_GRACE_SECONDS later; either way it ends
cancelled, and what it had finished stays. Only a process that is still the job's own (its
command line names this module, its data directory and its id) is ever signalled.

Runners are named by import path so this module stays light: `RUNNERS[kind] = "module:function"`,
called as `function(job)`.
"""
import datetime as dt
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from webapp.core import db, processes
from webapp.dataset.store import Dataset
from webapp.jobs import recovery

RUNNERS = {
    "download": "webapp.jobs.kinds:download",
    "train": "webapp.jobs.train:run_job",
    "score": "webapp.jobs.kinds:score",
    "upload": "webapp.jobs.kinds:upload",
    "suggest": "webapp.jobs.kinds:suggest",
    "import": "webapp.jobs.kinds:import_model",
}
# Kinds in the same group never run at the same time (they compete for the model and the CPU).
GROUPS = {"train": "model", "score": "model", "suggest": "model", "import": "model"}
HEARTBEAT_SECONDS = 1.0
STALE_SECONDS = 10.0  # a running job not heard from for this long is dead
CANCEL_GRACE_SECONDS = 5.0  # a job still running this long after Cancel is sent SIGTERM...
KILL_GRACE_SECONDS = 3.0  # ...and SIGKILL this much later if SIGTERM did not end it
MODULE = "webapp.jobs.runner"  # a job process's command line names it: see _is_job_process
ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")


class JobRefused(Exception):
    """A job of the same group is running already."""

    def __init__(self, message, running_id):
        super().__init__(message)
        self.running_id = running_id


class Cancelled(Exception):
    """Raised inside a runner when the job's cancel flag is set."""


class Stopped(Cancelled):
    """Raised inside a job process by SIGTERM: it was cancelled and did not stop in time."""


def _now():
    return time.time()


def _iso(ts):
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds") if ts else None


def log_path(data_dir, job_id):
    """Return the path of a job's log file."""
    return Path(data_dir) / "jobs" / f"{job_id}.log"


def create(conn, kind, params, actor="admin"):
    """Insert a queued job and return its id; refuse if its group is busy."""
    if kind not in RUNNERS:
        raise ValueError(f"unknown job kind {kind!r}")
    group = GROUPS.get(kind)
    with db.transaction(conn):
        _reap(conn)
        if group:
            kinds = [k for k, g in GROUPS.items() if g == group]
            busy = conn.execute(
                f"SELECT id, kind FROM jobs WHERE status IN ('queued', 'running') "
                f"AND kind IN ({','.join('?' * len(kinds))}) ORDER BY id LIMIT 1", kinds).fetchone()
            if busy:
                raise JobRefused(f"A {busy['kind']} job (#{busy['id']}) is running; "
                                 f"wait for it to finish or cancel it.", busy["id"])
        cur = conn.execute(
            "INSERT INTO jobs(kind, params, status, actor, created, heartbeat) "
            "VALUES (?, ?, 'queued', ?, ?, ?)",
            (kind, json.dumps(params), actor, _now(), _now()))
        return cur.lastrowid


def start(data_dir, kind, params, actor="admin"):
    """Create a job and start a new process for it; return the job id."""
    with db.session(data_dir) as conn:
        job_id = create(conn, kind, params, actor)
    path = log_path(data_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The job may use every core (a web worker runs with fewer threads); it runs niced, below
    # the web workers, so serving stays responsive while it trains.
    env = processes.child_env(OMP_NUM_THREADS=str(os.cpu_count() or 1))
    with open(path, "ab") as log:
        try:
            proc = subprocess.Popen(
                processes.module_command(MODULE, Path(data_dir).resolve(), job_id, RUNNERS[kind]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=processes.ROOT, env=env, start_new_session=True)
        except OSError as e:
            with db.session(data_dir) as conn:
                _finish(conn, job_id, "failed", f"could not start the job process: {e}")
            raise
    with db.session(data_dir) as conn:
        conn.execute("UPDATE jobs SET pid = ? WHERE id = ? AND pid IS NULL", (proc.pid, job_id))
    # Collect the exit status so no zombie is left behind in a long-lived web worker.
    threading.Thread(target=proc.wait, daemon=True).start()
    return job_id


def run_here(data_dir, kind, params, actor="cli", on_update=None):
    """Create a job and run it in this process (the CLI); return its final status row as a dict."""
    with db.session(data_dir) as conn:
        job_id = create(conn, kind, params, actor)
    execute(data_dir, job_id, on_update=on_update)
    return get(data_dir, job_id)


class Job:
    """What a runner sees: its parameters, and ways to report progress and outcomes."""

    def __init__(self, data_dir, job_id, on_update=None):
        self.data_dir = str(data_dir)
        self.id = job_id
        self._conn = db.connect(data_dir)
        row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        self.kind, self.params = row["kind"], json.loads(row["params"])
        self._on_update = on_update
        self._cancelled = False

    def progress(self, done=None, total=None, phase=None, message=None, detail=None):
        """Record progress; raise Cancelled if the job has been asked to stop.

        `phase` starts a new phase (its ETA restarts); `detail` is a small JSON-able dict
        (latest losses, counts) shown beside the bar.
        """
        sets, args = [], []
        if phase is not None:
            sets += ["phase = ?", "phase_started = ?"]
            args += [phase, _now()]
        for col, value in (("done", done), ("total", total), ("message", message)):
            if value is not None:
                sets.append(f"{col} = ?")
                args.append(value)
        if detail is not None:
            sets.append("detail = ?")
            args.append(json.dumps(detail))
        if sets:
            self._conn.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*args, self.id))
        if self._on_update:
            self._on_update(self.status())
        self.check_cancel()

    def item(self, key, status, detail=None, image_id=None):
        """Record the outcome of one item (a URL, a file) of the job."""
        self._conn.execute(
            "INSERT INTO job_items(job_id, key, status, detail, image_id, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self.id, key, status, detail, image_id, _now()))

    def log(self, message):
        """Write a line to the job's log (its stdout)."""
        print(message, flush=True)

    @property
    def cancelled(self):
        """Whether an admin asked this job to stop."""
        if not self._cancelled:
            row = self._conn.execute("SELECT cancel FROM jobs WHERE id = ?", (self.id,)).fetchone()
            self._cancelled = bool(row["cancel"])
        return self._cancelled

    def check_cancel(self):
        """Raise Cancelled when the job has been asked to stop."""
        if self.cancelled:
            raise Cancelled("cancelled by an admin")

    def status(self):
        """Return this job's status as `status_of` gives it."""
        row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (self.id,)).fetchone()
        return status_of(row)

    def close(self):
        self._conn.close()


def _runner(spec):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _finish(conn, job_id, status, message, result=None):
    result_json = json.dumps(result) if result is not None else None
    conn.execute(
        "UPDATE jobs SET status = ?, message = ?, result = ?, finished = ?, heartbeat = ? "
        "WHERE id = ? AND status IN ('queued', 'running')",
        (status, message, result_json, _now(), _now(), job_id))


def execute(data_dir, job_id, on_update=None, runner=None):
    """Run a created job in this process until it succeeds, fails or is cancelled.

    `runner` ("module:function") is the one the starting process looked up for the kind.
    """
    job = Job(data_dir, job_id, on_update)
    claimed = job._conn.execute(
        "UPDATE jobs SET status = 'running', pid = ?, started = ?, heartbeat = ? "
        "WHERE id = ? AND status = 'queued'", (os.getpid(), _now(), _now(), job_id)).rowcount
    if not claimed:
        job.close()
        return
    stop = threading.Event()

    def heartbeat():
        # Its own connection: an sqlite3 connection refuses use from a thread that did not open it.
        with db.session(data_dir) as conn:
            while not stop.wait(HEARTBEAT_SECONDS):
                conn.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (_now(), job_id))

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        job.log(f"job {job_id}: {job.kind} {json.dumps(job.params)}")
        result = _runner(runner or RUNNERS[job.kind])(job)
    except Stopped:
        job.log("stopped by SIGTERM after not responding to cancel")
        _finish(job._conn, job_id, "cancelled", _stopped_message(job._conn, job_id, "interrupted"))
    except Cancelled:
        job.log("cancelled")
        _finish(job._conn, job_id, "cancelled", "Cancelled; nothing it had finished was lost.")
    except Exception as e:  # the runner's failure is the job's failure, with its traceback logged
        job.log(traceback.format_exc())
        message = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        _finish(job._conn, job_id, "failed", message)
    else:
        message = (result or {}).pop("message", None) if isinstance(result, dict) else None
        _finish(job._conn, job_id, "succeeded", message or "Finished.", result)
        job.log("succeeded")
    finally:
        stop.set()
        beat.join()
        if on_update:
            on_update(job.status())
        job.close()


def cancel(data_dir, job_id):
    """Ask a job to stop; a queued job is cancelled at once. Return False if it had finished."""
    with db.session(data_dir) as conn, db.transaction(conn):
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row["status"] not in ACTIVE:
            return False
        conn.execute("UPDATE jobs SET cancel = 1, cancel_requested = COALESCE(cancel_requested, ?) "
                     "WHERE id = ?", (_now(), job_id))
        if row["status"] == "queued":  # its process, if one is starting, finds it taken and exits
            _finish(conn, job_id, "cancelled", "Cancelled before it started.")
            return True
    # Escalate even when no page is polling: this thread reaps until the job has stopped.
    threading.Thread(target=_watch_cancel, args=(data_dir, job_id), daemon=True).start()
    return True


def _watch_cancel(data_dir, job_id):
    """Reap every half second until a cancelled job has ended (or long after it should have)."""
    deadline = time.monotonic() + CANCEL_GRACE_SECONDS + KILL_GRACE_SECONDS + STALE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.5)
        reap(data_dir)
        with db.session(data_dir) as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None or row["status"] not in ACTIVE:
            return


def _stopped_message(conn, job_id, how):
    row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
    waited = _now() - (row["cancel_requested"] or _now())
    return (f"Stopped: it did not respond to Cancel for {waited:.0f} s, so it was {how}. "
            "What it had finished stays (its items below, the images it stored).")


def _alive(pid):
    if not pid:
        return True  # not started yet: only the heartbeat can tell
    return processes.pid_alive(pid)  # a child that exited but is not reaped (a zombie) is dead


def _is_job_process(pid, data_dir, job_id):
    """Tell whether `pid` is still this job's own process, leading the group start() gave it.

    A foreground job (the CLI's run_here) and a pid reused by another process after the job
    died both fail this, so they are never signalled.
    """
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode("utf-8", "replace").split("\0")
        leader = os.getpgid(pid) == pid
    except OSError:
        return False
    expected = [MODULE, str(Path(data_dir).resolve()), str(job_id)]
    return leader and any(argv[i:i + 3] == expected for i in range(len(argv)))


def _signal_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # gone already, or not ours after all: nothing to stop


def _catch_up_csv(data_dir, params):
    """Rewrite cleaned.csv from the store for a job that died before its own rewrite; say so."""
    if "store" not in params:  # kinds that write the dataset carry its settings (kinds._dataset)
        return ""
    try:
        dataset = Dataset.from_config({**params["store"], "DATA_DIR": data_dir})
        try:
            dataset.write_cleaned_csv()
        finally:
            dataset.close()
    except Exception as e:  # the row must still be finished; the next rewrite catches up
        return (f" cleaned.csv could not be rewritten ({type(e).__name__}: {e}); "
                "the next change rewrites it.")
    return " cleaned.csv was rewritten from the store."


def _reap(conn):
    """Stop cancelled jobs that ignore the flag; mark jobs whose process is gone or silent.

    Return how many jobs it marked finished.
    """
    now = _now()
    finished = 0
    data_dir = Path(conn.execute("PRAGMA database_list").fetchone()["file"]).parent
    active = conn.execute("SELECT id, pid, heartbeat, params, cancel_requested FROM jobs "
                          "WHERE status IN ('queued', 'running')").fetchall()
    for row in active:
        asked = row["cancel_requested"]
        if (asked and now - asked > CANCEL_GRACE_SECONDS
                and _is_job_process(row["pid"], data_dir, row["id"])):
            late = now - asked > CANCEL_GRACE_SECONDS + KILL_GRACE_SECONDS
            _signal_group(row["pid"], signal.SIGKILL if late else signal.SIGTERM)
        silent = now - (row["heartbeat"] or 0) > STALE_SECONDS
        if not silent and _alive(row["pid"]):
            continue
        finished += 1
        # Its own `finally` (the download's cleaned.csv rewrite) may not have run: the store is
        # the truth, so cleaned.csv is rebuilt from it now.
        csv_note = _catch_up_csv(data_dir, json.loads(row["params"]))
        if asked and now - asked > CANCEL_GRACE_SECONDS:  # signalled above (or on a past look)
            _finish(conn, row["id"], "cancelled",
                    _stopped_message(conn, row["id"], "killed") + csv_note)
        elif asked:
            _finish(conn, row["id"], "cancelled", "Cancelled; its process ended before it "
                    "finished. What it had finished stays." + csv_note)
        else:
            _finish(conn, row["id"], "failed",
                    "The job's process stopped without finishing (killed, or out of memory); "
                    "see its log. Nothing it had not finished was changed." + csv_note)
    return finished


def reap(data_dir, sweep=False):
    """Detect dead jobs now (status pages call this on every read; it is cheap).

    When it finds one (or `sweep` asks, at start-up), what a dead training left is swept too:
    only then, so a page polling a live job does no folder walks.
    """
    with db.session(data_dir) as conn, db.transaction(conn):
        finished = _reap(conn)
    if finished or sweep:
        recovery.sweep_training(data_dir)  # after the commit: it writes through its own connection


def status_of(row):
    """Return a job row as the JSON the status endpoint serves."""
    if row is None:
        return None
    now = _now()
    done, total = row["done"], row["total"]
    fraction = min(1.0, done / total) if total else None
    eta = None
    if row["status"] == "running" and fraction and row["phase_started"]:
        elapsed = now - row["phase_started"]
        eta = round(elapsed * (1 - fraction) / fraction, 1) if fraction > 0 else None
    return {
        "id": row["id"], "kind": row["kind"], "status": row["status"],
        "params": json.loads(row["params"]), "phase": row["phase"],
        "done": done, "total": total,
        "percent": round(100 * fraction, 1) if fraction is not None else None,
        "eta_seconds": eta, "message": row["message"],
        "detail": json.loads(row["detail"]) if row["detail"] else None,
        "result": json.loads(row["result"]) if row["result"] else None,
        "cancel_requested": bool(row["cancel"]), "actor": row["actor"],
        "created": _iso(row["created"]), "started": _iso(row["started"]),
        "finished": _iso(row["finished"]),
        "finished_ago": round(now - row["finished"], 1) if row["finished"] else None,
    }


def get(data_dir, job_id):
    """Return a job's status dict (after detecting a dead process), or None."""
    reap(data_dir)
    with db.session(data_dir) as conn:
        return status_of(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def items(data_dir, job_id, after=0, limit=1000):
    """Return a job's item outcomes in order, from position `after`."""
    with db.session(data_dir) as conn:
        rows = conn.execute(
            "SELECT id, key, status, detail, image_id FROM job_items WHERE job_id = ? AND id > ? "
            "ORDER BY id LIMIT ?", (job_id, after, limit)).fetchall()
    return [dict(r) for r in rows]


def item_counts(data_dir, job_id):
    """Return {status: count} over a job's items."""
    with db.session(data_dir) as conn:
        rows = conn.execute("SELECT status, COUNT(*) AS n FROM job_items WHERE job_id = ? "
                            "GROUP BY status", (job_id,)).fetchall()
    return {r["status"]: r["n"] for r in rows}


def recent(data_dir, kind=None, limit=20):
    """Return the latest jobs (of a kind), newest first."""
    reap(data_dir)
    with db.session(data_dir) as conn:
        if kind:
            rows = conn.execute("SELECT * FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT ?",
                                (kind, limit)).fetchall()
        else:
            rows = conn.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [status_of(r) for r in rows]


def running(data_dir, kind):
    """Return the status of the active job of a kind's group, or None."""
    reap(data_dir)
    group = GROUPS.get(kind)
    kinds = [k for k, g in GROUPS.items() if g == group] if group else [kind]
    with db.session(data_dir) as conn:
        row = conn.execute(
            f"SELECT * FROM jobs WHERE status IN ('queued', 'running') "
            f"AND kind IN ({','.join('?' * len(kinds))}) ORDER BY id LIMIT 1", kinds).fetchone()
    return status_of(row)


def read_log(data_dir, job_id, tail=20000):
    """Return the end of a job's log."""
    path = log_path(data_dir, job_id)
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - tail))
        return f.read().decode("utf-8", "replace")


def main(argv):
    data_dir, job_id, runner = argv[0], int(argv[1]), argv[2]
    os.nice(5)
    signal.signal(signal.SIGTERM, _stop)
    execute(data_dir, job_id, runner=runner)
    # Worker threads stuck in a slow fetch would hold up the interpreter's exit; the row is final.
    sys.stdout.flush()
    os._exit(0)


def _stop(signum, frame):
    """Turn the reaper's SIGTERM into Stopped, so the runner's cleanup (`finally`) runs."""
    # One unwinding at a time: a second SIGTERM must not cut the cleanup short (SIGKILL may).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped("stopped after not responding to cancel")


if __name__ == "__main__":
    main(sys.argv[1:])
