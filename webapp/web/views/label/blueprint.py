"""The labeling blueprint, and what its pages share: the actor, the way back, the class field."""
from flask import Blueprint, redirect, request, url_for

from webapp.dataset.store import check_class_name

bp = Blueprint("labeling", __name__, url_prefix="/label")
ACTOR = "admin"


def back(endpoint="labeling.index", **values):
    """Redirect to a page after a POST (303: the browser follows with a GET)."""
    return redirect(url_for(endpoint, **values)), 303


def label_field():
    """Return the form's class, or None for unlabeled; a name that cannot be a class is refused."""
    label = request.form.get("label", "").strip()
    return check_class_name(label) if label else None
