"""The retrain form: its defaults, read from the recipe's options, what it remembers of the last
run, and its parsing into job parameters."""
from webapp.jobs import runner as jobs
from webapp.model import registry
from webapp.model.recipe import ARCHS, TrainingRefused, TrainOptions


def form_defaults():
    """Return the retrain form's values: the lesson's defaults."""
    d = TrainOptions()
    return {"arch": d.arch, "size": d.size, "epochs": d.epochs,
            "fine_tune_epochs": d.fine_tune_epochs, "lr": "auto", "bs": d.bs,
            "pretrained": "auto", "activate": True,
            "lr_find_iters": "" if d.lr_find_iters is None else d.lr_find_iters}


def form_from_params(params):
    """Return the retrain form's values for a train job's parameters (or a version's options)."""
    form = form_defaults()
    form.update({k: params[k] for k in ("size", "epochs", "fine_tune_epochs", "bs")
                 if params.get(k) is not None})
    if params.get("arch") in ARCHS:
        form["arch"] = params["arch"]
    if params.get("lr") is not None:
        form["lr"] = format(params["lr"], "g")
    form["pretrained"] = {True: "yes", False: "no"}.get(params.get("pretrained"), "auto")
    if params.get("lr_find_iters") is not None:
        form["lr_find_iters"] = params["lr_find_iters"]
    form["activate"] = bool(params.get("activate", True))
    return form


def remembered_form(data_dir):
    """Return the retrain form's values and where they come from: the last train job's settings
    (whatever became of it), else the active version's, else the lesson's defaults."""
    last = next(iter(jobs.recent(data_dir, kind="train", limit=1)), None)
    if last is not None:
        return form_from_params(last["params"]), {"job": last["id"], "status": last["status"]}
    active = registry.active_version(data_dir)
    if active is not None:
        record = registry.version_record(data_dir, active)
        options = {"arch": record["arch"], "size": record["size"],
                   **(record["metrics"].get("options") or {}), "activate": True}
        return form_from_params(options), {"version": active}
    return form_defaults(), {}


def _number(form, key, kind, label):
    text = str(form.get(key, "")).strip()
    try:
        return kind(text)
    except ValueError:
        raise TrainingRefused(f"{label} must be a {'whole ' if kind is int else ''}number, "
                              f"not {text!r}") from None


def recipe_settings(cfg):
    """Return the app settings a train job needs besides the form (its process has no app)."""
    return {"valid_pct": cfg["VALID_PCT"], "seed": cfg["SPLIT_SEED"],
            "download_weights": not cfg["OFFLINE"]}


def params_from_form(form, settings):
    """Return a train job's parameters from the retrain form, or raise TrainingRefused."""
    lr_text = str(form.get("lr", "auto")).strip().lower()
    iters_text = str(form.get("lr_find_iters", "")).strip().lower()
    pretrained = {"auto": None, "yes": True, "no": False}.get(form.get("pretrained", "auto"))
    params = {
        "arch": form.get("arch", ""),
        "size": _number(form, "size", int, "the image size"),
        "epochs": _number(form, "epochs", int, "frozen epochs"),
        "fine_tune_epochs": _number(form, "fine_tune_epochs", int, "unfrozen epochs"),
        "lr": None if lr_text in ("", "auto") else _number(form, "lr", float, "the learning rate"),
        "bs": _number(form, "bs", int, "the batch size"),
        "lr_find_iters": None if iters_text in ("", "auto")  # its share of the run
        else _number(form, "lr_find_iters", int, "lr_find's iterations"),
        "pretrained": pretrained, "activate": bool(form.get("activate")),
        **settings,
    }
    if params["lr_find_iters"] is not None and not 10 <= params["lr_find_iters"] <= 1000:
        raise TrainingRefused("lr_find's iterations must be between 10 and 1000")
    TrainOptions.from_params(params)
    return params
