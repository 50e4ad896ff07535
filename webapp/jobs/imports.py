"""Imports as the label pages list them: a browser upload's batches make one entry.

The browser sends a pick of M files in batches, each batch an "upload" job of its own that
names the upload (its id and M). Together they say how many files arrived ("40 of 80 sent").
An upload short of its files is cut short once the page that sent it stopped (it says so when
it is left, or when sending fails) or, failing that word, once no batch has come for
STALLED_SECONDS.
"""
import re
from collections import Counter

from webapp.core import db
from webapp.ingest.uploads import UploadRefused
from webapp.jobs import runner

KINDS = ("download", "upload")
UPLOAD_ID = re.compile(r"[0-9a-f]{16,64}")
MAX_FILES = 1_000_000
STALLED_SECONDS = 120.0
BATCHES_READ = 500  # upload jobs read to make the latest entries (an upload is many batches)


def upload_of(upload_id, total):
    """Return the browser upload a batch belongs to as {"id", "total"}; None if it names none."""
    if not upload_id and not total:
        return None
    try:
        total = int(total)
    except (TypeError, ValueError):
        total = 0
    if not UPLOAD_ID.fullmatch(upload_id or "") or not 0 < total <= MAX_FILES:
        raise UploadRefused("a batch names its upload by an id of 16–64 hex digits and the "
                            f"number of files picked (1–{MAX_FILES}); this one does not")
    return {"id": upload_id, "total": total}


def mark_stopped(data_dir, upload_id):
    """Record that an upload's page stopped before its last batch; return how many batches."""
    if not UPLOAD_ID.fullmatch(upload_id or ""):
        return 0
    # In the parameters, not the result: a batch finishing at this moment rewrites its result.
    with db.session(data_dir) as conn:
        return conn.execute(
            "UPDATE jobs SET params = json_set(params, '$.upload.stopped', json('true')) "
            "WHERE kind = 'upload' AND json_extract(params, '$.upload.id') = ?",
            (upload_id,)).rowcount


def _item_counts(data_dir, job_ids):
    """Return {job id: {status: count}} over the items of these jobs."""
    counts = {job_id: {} for job_id in job_ids}
    with db.session(data_dir) as conn:
        for r in conn.execute(
                f"SELECT job_id, status, COUNT(*) AS n FROM job_items WHERE job_id IN "
                f"({','.join('?' * len(job_ids))}) GROUP BY job_id, status", list(job_ids)):
            counts[r["job_id"]][r["status"]] = r["n"]
    return counts


def _upload_key(job):
    upload = job["params"].get("upload")
    return upload["id"] if upload else f"job {job['id']}"


def _entry(batches):
    """Return one import from its jobs, oldest first: the first job, with the upload's totals."""
    first, last = batches[0], batches[-1]
    upload = first["params"].get("upload")
    if not upload:
        return first
    counts = Counter()
    for batch in batches:
        counts.update(batch["counts"])
    sent, total = sum(counts.values()), upload["total"]
    busy = any(b["status"] in runner.ACTIVE for b in batches)
    stopped = any(b["params"]["upload"].get("stopped") for b in batches)
    stalled = (last["finished_ago"] or 0) > STALLED_SECONDS
    cut_short = sent < total and not busy and (stopped or stalled)
    failed = any(b["status"] == "failed" for b in batches)
    status = ("cut short" if cut_short else "sending" if sent < total or busy
              else "failed" if failed else "succeeded")
    return {**first, "status": status, "counts": dict(counts), "finished": last["finished"],
            "upload": {"sent": sent, "total": total, "batches": len(batches),
                       "cut_short": cut_short}}


def recent_imports(data_dir, limit=10):
    """Return the latest downloads and uploads, newest first, each with its item counts."""
    jobs = (runner.recent(data_dir, "download", limit)
            + runner.recent(data_dir, "upload", BATCHES_READ))
    counts = _item_counts(data_dir, [j["id"] for j in jobs])
    groups = {}
    for job in sorted(jobs, key=lambda j: j["id"]):
        job["counts"] = counts[job["id"]]
        groups.setdefault(_upload_key(job), []).append(job)
    entries = [_entry(batches) for batches in groups.values()]
    return sorted(entries, key=lambda e: -e["id"])[:limit]


def _batches(data_dir, upload_id):
    with db.session(data_dir) as conn:
        rows = conn.execute("SELECT * FROM jobs WHERE kind = 'upload' AND "
                            "json_extract(params, '$.upload.id') = ? ORDER BY id",
                            (upload_id,)).fetchall()
    return [runner.status_of(r) for r in rows]


def one_import(data_dir, job_id):
    """Return an import's page: its first job, every file's outcome, counts; None if no import.

    A batch of a browser upload shows the whole upload, with `upload` saying how much was sent.
    """
    job = runner.get(data_dir, job_id)
    if job is None or job["kind"] not in KINDS:
        return None
    upload = job["params"].get("upload")
    batches = _batches(data_dir, upload["id"]) if upload else [job]
    counts = _item_counts(data_dir, [b["id"] for b in batches])
    for batch in batches:
        batch["counts"] = counts[batch["id"]]
    entry = _entry(batches)
    return {"job": batches[0], "upload": entry.get("upload"),
            "items": [i for b in batches for i in runner.items(data_dir, b["id"])],
            "counts": entry["counts"]}
