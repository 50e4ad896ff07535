"""Job pages: live status (HTML and JSON), per-item outcomes, log, cancel."""
from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from webapp.jobs import runner as jobs
from webapp.web.auth import admin_required, safe_next
from webapp.web.resources import data_dir

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


def _job_or_404(job_id):
    job = jobs.get(data_dir(), job_id)
    if job is None:
        abort(404, description=f"There is no job #{job_id}.")
    return job


@bp.route("/")
@admin_required
def index():
    return render_template("jobs/index.html", jobs=jobs.recent(data_dir(), limit=50))


@bp.route("/<int:job_id>")
@admin_required
def show(job_id):
    folder = data_dir()
    job = _job_or_404(job_id)
    return render_template("jobs/show.html", job=job, items=jobs.items(folder, job_id),
                           counts=jobs.item_counts(folder, job_id),
                           log=jobs.read_log(folder, job_id))


@bp.route("/<int:job_id>.json")
@admin_required
def status(job_id):
    """The job's status, and its item outcomes after ?after=<item id> (for polling)."""
    folder = data_dir()
    job = _job_or_404(job_id)
    after = request.args.get("after", 0, type=int)
    job["items"] = jobs.items(folder, job_id, after=after)
    job["counts"] = jobs.item_counts(folder, job_id)
    return jsonify(job)


@bp.route("/<int:job_id>/cancel", methods=["POST"])
@admin_required
def cancel(job_id):
    _job_or_404(job_id)
    if jobs.cancel(data_dir(), job_id):
        flash(f"Asked job #{job_id} to stop; it stops at its next step.")
    else:
        flash(f"Job #{job_id} had already finished.", "error")
    return redirect(safe_next(request.form.get("next"), url_for("jobs.show", job_id=job_id))), 303
