"""Stored images for admin pages: /media/<id> (the file) and /media/<id>?size=256 (a thumbnail)."""
from flask import Blueprint, abort, request, send_file

from webapp.core import thumbnails
from webapp.web.auth import admin_required
from webapp.web.resources import data_dir, get_dataset

bp = Blueprint("media", __name__, url_prefix="/media")


@bp.route("/<int:image_id>")
@admin_required
def image(image_id):
    dataset = get_dataset()
    row = dataset.image(image_id)
    if row is None:
        abort(404, description=f"There is no image #{image_id}.")
    source = dataset.file_path(row)
    if not source.exists():
        abort(404, description=f"Image #{image_id}'s file is missing from the data directory.")
    size = request.args.get("size", type=int)
    ext = row["path"].rsplit(".", 1)[-1]
    if size is None and ext in thumbnails.BROWSER_FORMATS:
        return _private(send_file(source, mimetype=thumbnails.BROWSER_FORMATS[ext]))
    try:
        path = thumbnails.thumbnail(data_dir(), source, row["sha256"],
                                    size or thumbnails.SIZES[-1])
    except ValueError as e:
        abort(400, description=str(e))
    return _private(send_file(path, mimetype="image/jpeg"))


def _private(response):
    """Keep an admin's picture out of shared caches and off the disk of the browser's cache."""
    response.headers["Cache-Control"] = "private, no-store"
    return response
