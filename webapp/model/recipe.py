"""The training recipe, written once: its knobs and defaults, the learner, and the fit.

From ImageNet weights it is the lesson's: lr_find, fit_one_cycle with the body frozen, unfreeze,
lr_find, fit_one_cycle(slice(lo, hi)). From scratch there is no body worth freezing, so it is
plain fastai's: lr_find, then one fit_one_cycle over all the epochs for the whole network, on
the images as they are (no augmentation: a short run from random weights underfits, and
distorted images only slow it down), in batches small enough for SCRATCH_STEPS steps an epoch.
lr_find runs only for the rates the options leave open, within its share of the run
(lr_rules.lr_find_budget), and stops where the loss diverges.

A model version (training.train) and a cross-validation fold (cleaning.crossval) both build their
learner with build_learner and fit it with fit_recipe. A fold differs only in its options: it
reuses the learning rates its version found, so lr_find does not run.
"""
import time
from dataclasses import dataclass, replace
from pathlib import Path

from webapp.dataset.manifest import CLEANED_CSV
from webapp.model import lr_rules, recorder

ARCHS = ("resnet18", "resnet34", "resnet50")
FALLBACK_LR = 1e-3
MAX_EPOCHS = 100
FROZEN, UNFROZEN, SCRATCH = "frozen", "unfrozen", "from scratch"  # the stages a fit goes through
# From random weights a short run needs steps more than big batches: 426 digit pictures in
# batches of 64 make 6 steps an epoch, and 6 epochs of them left the error between 0.045 and
# 0.13 from one seed to the next; in batches of 16 (26 steps) between 0 and 0.063
# (bench/lr_find.py, lr auto; plain fastai in batches of 64 on the same seeds: 0.045 to 0.126).
SCRATCH_STEPS = 16
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
    epochs: int = 4  # frozen: fit_one_cycle(epochs, lr); from scratch, one cycle of both
    fine_tune_epochs: int = 2  # unfrozen: fit_one_cycle(fine_tune_epochs, slice(lo, hi))
    lr: float | None = None  # None: lr_find's suggestion (from scratch: lr_rules.scratch_lr)
    lr_unfrozen: tuple[float, float] | None = None  # (lo, hi); None: lo from lr_find, hi = lr/5
    bs: int = 64
    valid_pct: float = 0.2  # recorded: the split itself is fixed in the store
    seed: int = 42
    pretrained: bool | None = None  # None: use ImageNet weights when torchvision can load them
    download_weights: bool = True  # with pretrained None: may download them (not offline)
    num_workers: int = 0
    lr_find_iters: int | None = None  # None: lr_find_budget's share of the run
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
    """Create the DataLoaders from a cleaned.csv-shaped table and a vision learner on them:
    augmented as the lesson's are from ImageNet weights, as they are from scratch, in batches of
    batch_size.

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
        batch_tfms=aug_transforms() if pretrained else None,
        bs=batch_size(opts.bs, int((~table["is_valid"]).sum()), pretrained),
        seed=opts.seed, num_workers=opts.num_workers, device="cpu",
    )
    learn = vision_learner(dls, getattr(tvm, opts.arch), metrics=error_rate, pretrained=pretrained)
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
    return learn


def batch_size(bs, n_train, pretrained):
    """Return the batch size to train with: `bs`, at most the training split; from scratch, halved
    until an epoch has SCRATCH_STEPS batches, down to 8."""
    bs = min(bs, n_train)
    while not pretrained and bs > 8 and n_train // bs < SCRATCH_STEPS:
        bs //= 2
    return bs


@dataclass
class Fit:
    """What one run of the recipe found."""

    lr: float
    lr_unfrozen: tuple  # (lo, hi) of the unfrozen stage's slice; from scratch (lr, lr)
    lr_find: dict  # lr_find's curves by stage, for the stages that ran it
    report: object  # recorder's callback: per-epoch history, loss curve, last epoch
    seconds: dict  # per phase: lr_find (all of its runs), then frozen and unfrozen, or from scratch
    said: str  # which recipe ran, with its epochs and rates, in a sentence


def fit_recipe(learn, opts, pretrained, on_progress=None, should_stop=None):
    """Fit a learner with the recipe its weights call for (see the module); return what it found.

    `on_progress(phase=, epoch=, n_epochs=, batch=, n_batches=, loss=, last_epoch=)` is called
    per batch, and with `stage=` (the stage it is for) as an lr_find starts; when `should_stop()`
    turns true the fit stops and TrainingCancelled is raised.
    """
    finds = (opts.lr is None) + bool(pretrained and opts.fine_tune_epochs
                                     and opts.lr_unfrozen is None)
    budget = lr_rules.lr_find_budget(len(learn.dls.train), opts, finds)
    fitting = _Fitting(learn, opts, recorder.report_callback(on_progress, should_stop), budget,
                       on_progress, should_stop)
    learn.add_cb(fitting.report)
    try:
        lr, lr_unfrozen, said = (_fit_lesson if pretrained else _fit_from_scratch)(fitting)
    finally:
        learn.remove_cb(fitting.report)
    return Fit(lr, lr_unfrozen, fitting.curves, fitting.report, fitting.seconds, said)


def _fit_lesson(fitting):
    """The lesson's recipe on a pretrained body: frozen, unfreeze, then slice(lo, lr/5)."""
    learn, opts = fitting.learn, fitting.opts
    learn.freeze()
    lr = opts.lr if opts.lr is not None else lr_rules.finite_or(
        fitting.find(FROZEN).get("valley"), FALLBACK_LR)
    if opts.epochs:
        fitting.fit(FROZEN, opts.epochs, lr)
    learn.unfreeze()
    if opts.lr_unfrozen:
        lo, hi = opts.lr_unfrozen
    elif opts.fine_tune_epochs:
        hi = lr / 5
        lo = min(lr_rules.finite_or(fitting.find(UNFROZEN).get("valley"), FALLBACK_LR), hi / 10)
    else:  # no unfrozen stage, so no lr_find for it: the rates a fold would take are recorded
        lo, hi = lr / 100, lr / 5
    if opts.fine_tune_epochs:
        fitting.fit(UNFROZEN, opts.fine_tune_epochs, slice(lo, hi))
    return lr, (lo, hi), (
        f"the lesson's, from ImageNet weights: {opts.epochs} epochs with the body frozen at lr "
        f"{lr:.1e}, then {opts.fine_tune_epochs} unfrozen at slice({lo:.1e}, {hi:.1e})")


def _fit_from_scratch(fitting):
    """From random weights: the whole network, one fit_one_cycle over all the epochs."""
    learn, opts = fitting.learn, fitting.opts
    epochs = opts.epochs + opts.fine_tune_epochs
    lr = opts.lr if opts.lr is not None else lr_rules.scratch_lr(fitting.find(SCRATCH))
    fitting.fit(SCRATCH, epochs, lr)
    how = "given" if opts.lr is not None else (
        f"lr_find's valley, at least {lr_rules.SCRATCH_LR:.0e}")
    return lr, (lr, lr), (
        f"from scratch (no ImageNet weights): the whole network, {epochs} epochs at lr "
        f"{lr:.1e} ({how}) in batches of {learn.dls.bs}")


class _Fitting:
    """One fit under way: times its phases and runs its lr_finds within their budget."""

    def __init__(self, learn, opts, report, lr_find_iters, on_progress, should_stop):
        self.learn, self.opts, self.report = learn, opts, report
        self.lr_find_iters = lr_find_iters
        self.on_progress, self.should_stop = on_progress, should_stop
        self.seconds, self.curves = {}, {}

    def run(self, phase, step):
        """Run step() as `phase`, add up its seconds, then stop if asked; return what it gave."""
        self.report.phase = phase
        started = time.monotonic()
        out = step()
        self.seconds[phase] = round(self.seconds.get(phase, 0) + time.monotonic() - started, 2)
        stop_if_asked(self.should_stop, self.report)
        return out

    def fit(self, stage, epochs, lr):
        """Run fit_one_cycle as `stage` from the seed's random state: whether lr_find ran before
        it or the rate was given, the same rate trains the same model."""
        from fastai.torch_core import set_seed

        set_seed(self.opts.seed, reproducible=True)
        self.run(stage, lambda: self.learn.fit_one_cycle(epochs, lr))

    def find(self, stage):
        """Run lr_find before `stage`, keep its curve, and return its suggestions."""
        self.curves[stage] = self.run("lr_find", lambda: _lr_find(
            self.learn, self.report, self.lr_find_iters, self.on_progress, stage))
        return self.curves[stage]["suggestions"]


def stop_if_asked(should_stop, report=None):
    """Raise TrainingCancelled when `should_stop()` says so or the fit was stopped."""
    if (report is not None and report.stopped) or (should_stop and should_stop()):
        raise TrainingCancelled("the run was stopped as asked; nothing of it was kept")


def _lr_find(learn, report, iters, on_progress, stage):
    """Run lr_find before `stage` for at most `iters` iterations, stopping where the loss
    diverges, without disturbing the weights; return its curve and suggestions."""
    report.lr_find_iters = iters
    if on_progress:
        on_progress(phase="lr_find", epoch=0, n_epochs=1, batch=0, n_batches=iters, loss=None,
                    last_epoch=report.last_epoch, stage=stage)
    smooth = learn.recorder.smooth_loss  # smoothed over the span of rates fastai's 100 cover
    beta = smooth.beta
    smooth.beta = lr_rules.smoothing(beta, iters)
    try:
        learn.lr_find(num_it=iters, stop_div=True, show_plot=False, suggest_funcs=None)
    finally:
        smooth.beta = beta
    lrs = [float(x) for x in learn.recorder.lrs]
    losses = [float(x) for x in learn.recorder.losses]
    step = max(1, len(lrs) // 100)
    return {"lr": lrs[::step], "loss": losses[::step], "num_it": iters, "ran": len(lrs),
            "suggestions": lr_rules.suggest(lrs, losses, iters)}


