"""Admin overview: the dataset, the model versions, and which one is active."""
from flask import Blueprint, current_app, flash, redirect, render_template, url_for

from . import registry
from .auth import admin_required
from .resources import get_dataset

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/")
@admin_required
def index():
    data_dir = current_app.config["DATA_DIR"]
    dataset = get_dataset()
    return render_template(
        "admin/index.html", counts=dataset.class_counts(), unlabeled=dataset.unlabeled_count(),
        versions=registry.versions(data_dir), active=registry.active_version(data_dir),
        events=dataset.events(limit=20),
    )


@bp.route("/models/<version>/activate", methods=["POST"])
@admin_required
def activate(version):
    try:
        registry.activate(current_app.config["DATA_DIR"], version)
    except registry.ModelError as e:
        flash(str(e), "error")
        return redirect(url_for("admin.index")), 303
    flash(f"Model {version} is now active; every worker serves it within about a second.")
    return redirect(url_for("admin.index")), 303
