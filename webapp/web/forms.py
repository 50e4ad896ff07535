"""The retrain form: its defaults, read from the recipe's options, and its parsing into job
parameters."""
from webapp.model.recipe import TrainingRefused, TrainOptions


def form_defaults():
    """Return the retrain form's values: the lesson's defaults."""
    d = TrainOptions()
    return {"arch": d.arch, "size": d.size, "epochs": d.epochs,
            "fine_tune_epochs": d.fine_tune_epochs, "lr": "auto", "bs": d.bs,
            "pretrained": "auto", "activate": True, "lr_find_iters": d.lr_find_iters}


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
    pretrained = {"auto": None, "yes": True, "no": False}.get(form.get("pretrained", "auto"))
    params = {
        "arch": form.get("arch", ""),
        "size": _number(form, "size", int, "the image size"),
        "epochs": _number(form, "epochs", int, "frozen epochs"),
        "fine_tune_epochs": _number(form, "fine_tune_epochs", int, "unfrozen epochs"),
        "lr": None if lr_text in ("", "auto") else _number(form, "lr", float, "the learning rate"),
        "bs": _number(form, "bs", int, "the batch size"),
        "lr_find_iters": _number(form, "lr_find_iters", int, "lr_find's iterations")
        if form.get("lr_find_iters") else None,
        "pretrained": pretrained, "activate": bool(form.get("activate")),
        **settings,
    }
    if params["lr_find_iters"] is not None and not 10 <= params["lr_find_iters"] <= 1000:
        raise TrainingRefused("lr_find's iterations must be between 10 and 1000")
    TrainOptions.from_params(params)
    return params
