"""The class pages: the overview; creating, renaming, merging and deleting classes; undo."""
from flask import flash, render_template, request

from webapp.core.words import plural
from webapp.dataset import classnames
from webapp.dataset.refusals import ClassExists
from webapp.dataset.store import StoreError, check_class_name
from webapp.jobs import imports
from webapp.web.auth import admin_required
from webapp.web.errors import sentence
from webapp.web.resources import data_dir, get_dataset
from webapp.web.views.label.blueprint import ACTOR, back, bp

CLASS_EVENTS = ("add_class", "rename_class", "delete_class", "merge_classes")


def _class_changes(dataset, limit=10):
    """Return the latest class events to offer undo for (not those that came with an import)."""
    return dataset.history(limit=limit, kinds=CLASS_EVENTS, by_hand=True)


def _overview(offer=None, status=200, refused=None):
    """Render the overview; `offer` is a merge to propose ({"names", "into"}) beside the error.

    `refused` is a class form's refusal, shown beside that form with what was typed in it:
    {"form": "new-class", "rename", "delete" or "changes", "message", "name", "value"}.
    """
    dataset = get_dataset()
    counts = dataset.class_counts()
    look_alikes = classnames.merge_suggestions({k: n["train"] + n["valid"]
                                                for k, n in counts.items()})
    return render_template("label/index.html", counts=counts,
                           unlabeled=dataset.unlabeled_count(), changes=_class_changes(dataset),
                           imports=imports.recent_imports(data_dir()), offer=offer,
                           look_alikes=look_alikes, refused=refused or {}), status


def _refused(form, error, name=None, value=""):
    """Show the overview again with a class form's refusal beside it, its input kept (400)."""
    return _overview(status=400, refused={"form": form, "message": sentence(str(error)),
                                          "name": name, "value": value})


@bp.route("/")
@admin_required
def index():
    return _overview()


@bp.route("/classes", methods=["POST"])
@admin_required
def create_class():
    typed, dataset = request.form.get("name", ""), get_dataset()
    try:
        name = check_class_name(typed)
        existed = name in dataset.class_names()
        dataset.change("add_class", name=name, actor=ACTOR)
    except StoreError as e:
        return _refused("new-class", e, value=typed)
    flash(f"There is a class {name!r} already: nothing changed." if existed
          else f"Class {name!r} is ready.")
    return back()


@bp.route("/classes/<name>/rename", methods=["POST"])
@admin_required
def rename_class(name):
    try:
        new = get_dataset().change("rename_class", name=name,
                                   new_name=request.form.get("new_name"), actor=ACTOR)
    except ClassExists as e:
        if e.name != name:  # two names for one class: offer to merge them instead
            return _overview(offer={"names": [name], "into": e.name}, status=409)
        return _refused("rename", e, name=name, value=request.form.get("new_name", ""))
    except StoreError as e:
        return _refused("rename", e, name=name, value=request.form.get("new_name", ""))
    flash(f"Renamed {name!r} to {new!r}; its images and cleaned.csv follow.")
    return back()


@bp.route("/classes/merge", methods=["POST"])
@admin_required
def merge_classes():
    names, into = request.form.getlist("names"), request.form.get("into", "").strip()
    if not into:
        return _refused("merge", "say which class to merge them into")
    try:
        moved = get_dataset().merge_classes(names, into, actor=ACTOR)
    except StoreError as e:
        return _refused("merge", e, value=into)
    merged = ", ".join(repr(n) for n in names if n != into)
    flash(f"Merged {merged} into {into!r}: {plural(moved, 'image')} moved; cleaned.csv follows. "
          "Undo it below if that was a mistake.")
    return back()


@bp.route("/classes/<name>/delete", methods=["POST"])
@admin_required
def delete_class(name):
    images_to = request.form.get("images_to", "")
    if images_to not in ("unlabel", "delete"):
        return _refused("delete", "say whether the class's images become unlabeled or are "
                        "deleted", name=name)
    try:
        get_dataset().change("delete_class", name=name, images_to=images_to, actor=ACTOR)
    except StoreError as e:
        return _refused("delete", e, name=name)
    fate = "deleted (restorable)" if images_to == "delete" else "unlabeled"
    flash(f"Deleted class {name!r}; its images are {fate}. Undo it below if that was a mistake.")
    return back()


@bp.route("/undo", methods=["POST"])
@admin_required
def undo():
    change_id = request.form.get("change_id", type=int)
    if change_id is None:
        return _refused("changes", "say which change to undo")
    try:
        undone = get_dataset().undo_change(change_id, actor=ACTOR)
    except StoreError as e:
        return _refused("changes", e)
    flash(f"Undone: {undone.text(CLASS_EVENTS)}.")
    return back()
