"""The lesson's recipe, written once: its knobs and defaults, the learner, and the fit.

A model version (training.train) and a cross-validation fold (cleaning.crossval) both build their
learner with build_learner and fit it with fit_recipe. A fold differs only in its options: it
reuses the learning rates its version found, so lr_find does not run.
"""
import math
from dataclasses import dataclass, replace
from pathlib import Path

from webapp.dataset.manifest import CLEANED_CSV
from webapp.model import recorder

ARCHS = ("resnet18", "resnet34", "resnet50")
FALLBACK_LR = 1e-3
MAX_EPOCHS = 100
# What a job may set; anything else in its parameters is ignored. The job process has no Flask
# app, so the split settings come in the parameters too.
JOB_OPTIONS = ("arch", "size", "epochs", "fine_tune_epochs", "lr", "bs", "pretrained",
               "download_weights", "valid_pct", "seed", "lr_find_iters")


class TrainingRefused(ValueError):
    """The dataset cannot be trained on yet; the message says what to fix."""


class TrainingCancelled(Exception):
    """An admin stopped the run; nothing was registered."""


@dataclass
class TrainOptions:
    """The lesson's knobs, with its defaults."""

    arch: str = "resnet34"
    size: int = 224
    epochs: int = 4  # frozen: fit_one_cycle(epochs, lr)
    fine_tune_epochs: int = 2  # unfrozen: fit_one_cycle(fine_tune_epochs, slice(lo, hi))
    lr: float | None = None  # None: lr_find's suggestion
    lr_unfrozen: tuple[float, float] | None = None  # (lo, hi); None: lo from lr_find, hi = lr/5
    bs: int = 64
    valid_pct: float = 0.2  # recorded: the split itself is fixed in the store
    seed: int = 42
    pretrained: bool | None = None  # None: use ImageNet weights when torchvision can load them
    download_weights: bool = True  # with pretrained None: may download them (not offline)
    num_workers: int = 0
    lr_find_iters: int = 100
    activate: bool = True

    @classmethod
    def from_params(cls, params):
        """Return the checked options a job's parameters ask for (never activating itself)."""
        opts = cls(**_given(params), activate=False)
        opts.check()
        return opts

    @classmethod
    def from_version(cls, metrics):
        """Return the options a version was trained with, its learning rates fixed (no lr_find)."""
        opts = cls(**_given(metrics.get("options") or {}))  # an imported model records none
        lr = float(metrics.get("lr") or FALLBACK_LR)
        lo, hi = metrics.get("lr_unfrozen") or (lr / 100, lr / 5)
        return replace(opts, arch=metrics.get("arch") or opts.arch,
                       size=int(metrics.get("size") or opts.size), lr=lr,
                       lr_unfrozen=(float(lo), float(hi)),
                       pretrained=bool(metrics.get("pretrained")), activate=False)

    def check(self):
        """Raise TrainingRefused for settings that cannot work."""
        if self.arch not in ARCHS:
            raise TrainingRefused(
                f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if not 16 <= self.size <= 1024:
            raise TrainingRefused("the image size must be between 16 and 1024 pixels")
        if min(self.epochs, self.fine_tune_epochs) < 0 or self.epochs + self.fine_tune_epochs == 0:
            raise TrainingRefused("train for at least one epoch")
        if max(self.epochs, self.fine_tune_epochs) > MAX_EPOCHS:
            raise TrainingRefused(f"train for at most {MAX_EPOCHS} epochs per stage")
        if not 2 <= self.bs <= 1024:
            raise TrainingRefused("the batch size must be between 2 and 1024")
        if self.lr is not None and not 0 < self.lr < 10:
            raise TrainingRefused("the learning rate must be between 0 and 10")
        if self.lr_unfrozen is not None and not 0 < self.lr_unfrozen[0] <= self.lr_unfrozen[1] < 10:
            raise TrainingRefused("the unfrozen learning rates must be 0 < lo <= hi < 10")


def _given(params):
    return {k: params[k] for k in JOB_OPTIONS if params.get(k) is not None}


def build_learner(data_dir, opts, pretrained, manifest=None, rows=None):
    """Create the DataLoaders from a cleaned.csv-shaped table and a vision learner on them.

    The table (name, label, is_valid; names relative to the data dir) is `rows` when given (a
    fold), else the csv at `manifest` (a version; cleaned.csv by default).
    """
    import pandas as pd
    import torchvision.models as tvm
    from fastai.torch_core import set_seed
    from fastai.vision.all import (
        ImageDataLoaders,
        Resize,
        aug_transforms,
        error_rate,
        vision_learner,
    )

    if rows is None:
        table = pd.read_csv(Path(manifest or Path(data_dir) / CLEANED_CSV))
    else:
        table = pd.DataFrame(rows, columns=["name", "label", "is_valid"])
    table["is_valid"] = table["is_valid"].astype(str) == "True"  # a csv's text or a bool
    set_seed(opts.seed, reproducible=True)
    dls = ImageDataLoaders.from_df(
        table, data_dir, valid_col="is_valid", item_tfms=Resize(opts.size),
        batch_tfms=aug_transforms(), bs=min(opts.bs, int((~table["is_valid"]).sum())),
        seed=opts.seed, num_workers=opts.num_workers, device="cpu",
    )
    learn = vision_learner(dls, getattr(tvm, opts.arch), metrics=error_rate, pretrained=pretrained)
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
    return learn


@dataclass
class Fit:
    """What one run of the recipe found."""

    lr: float
    lr_unfrozen: tuple  # (lo, hi) of the unfrozen stage's slice
    lr_find: dict  # lr_find's curves by stage, for the stages that ran it
    report: object  # recorder's callback: per-epoch history, loss curve, last epoch


def fit_recipe(learn, opts, pretrained, on_progress=None, should_stop=None):
    """Fit a learner with the lesson's recipe: (lr_find,) fit_one_cycle with the body frozen,
    unfreeze, (lr_find,) fit_one_cycle(slice(lo, hi)); return what it found.

    lr_find runs for the rates the options leave open (`lr`, `lr_unfrozen`).
    `on_progress(phase=, epoch=, n_epochs=, batch=, n_batches=, loss=, last_epoch=)` is called
    per batch; when `should_stop()` turns true the fit stops and TrainingCancelled is raised.
    """
    report = recorder.report_callback(on_progress, should_stop, opts.lr_find_iters)
    learn.add_cb(report)
    if pretrained:
        learn.freeze()  # random weights have nothing to protect: from scratch, train it all
    curves, lr = {}, opts.lr
    if lr is None:
        lr, curves["frozen"] = _lr_find(learn, report, opts.lr_find_iters, on_progress)
        stop_if_asked(should_stop, report)
    report.phase = "frozen"
    if opts.epochs:
        learn.fit_one_cycle(opts.epochs, lr)
        stop_if_asked(should_stop, report)
    learn.unfreeze()
    if opts.lr_unfrozen:
        lo, hi = opts.lr_unfrozen
    else:
        hi = lr / 5
        lo, curves["unfrozen"] = _lr_find(learn, report, opts.lr_find_iters, on_progress)
        stop_if_asked(should_stop, report)
        lo = min(lo, hi / 10)
    report.phase = "unfrozen"
    if opts.fine_tune_epochs:
        learn.fit_one_cycle(opts.fine_tune_epochs, slice(lo, hi))
        stop_if_asked(should_stop, report)
    learn.remove_cb(report)
    return Fit(lr, (lo, hi), curves, report)


def stop_if_asked(should_stop, report=None):
    """Raise TrainingCancelled when `should_stop()` says so or the fit was stopped."""
    if (report is not None and report.stopped) or (should_stop and should_stop()):
        raise TrainingCancelled("the run was stopped as asked; nothing of it was kept")


def _finite_or(x, default):
    return float(x) if x is not None and math.isfinite(float(x)) else default


def _lr_find(learn, report, iters, on_progress):
    """Run lr_find and return (suggestion, curve) without disturbing the weights."""
    from fastai.callback.schedule import minimum, steep, valley

    report.phase = "lr_find"
    if on_progress:
        on_progress(phase="lr_find", epoch=0, n_epochs=1, batch=0, n_batches=iters, loss=None,
                    last_epoch=report.last_epoch)
    try:
        found = learn.lr_find(num_it=iters, show_plot=False,
                              suggest_funcs=(minimum, steep, valley))._asdict()
    except (IndexError, ValueError):  # too few points before the loss diverged to suggest one
        found = {}
    lrs = [float(x) for x in learn.recorder.lrs]
    losses = [float(x) for x in learn.recorder.losses]
    step = max(1, len(lrs) // 100)
    suggestions = {k: _finite_or(v, None) for k, v in found.items()}
    curve = {"lr": lrs[::step], "loss": losses[::step], "suggestions": suggestions}
    return _finite_or(suggestions.get("valley"), FALLBACK_LR), curve
