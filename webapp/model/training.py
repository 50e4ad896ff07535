"""Training with the lesson's recipe, from cleaned.csv into a new model version."""
import csv
import math
import os
import platform
import shutil
import socket
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from webapp.model import recorder, registry
from webapp.dataset.manifest import CLEANED_CSV, file_sha256

ARCHS = ("resnet18", "resnet34", "resnet50")
FALLBACK_LR = 1e-3
MAX_EPOCHS = 100


class TrainingRefused(ValueError):
    """The dataset cannot be trained on yet; the message says what to fix."""


@dataclass
class TrainOptions:
    """The lesson's knobs, with its defaults."""

    arch: str = "resnet34"
    size: int = 224
    epochs: int = 4  # frozen: fit_one_cycle(epochs, lr)
    fine_tune_epochs: int = 2  # unfrozen: fit_one_cycle(fine_tune_epochs, slice(lo, hi))
    lr: float | None = None  # None: lr_find's suggestion
    bs: int = 64
    valid_pct: float = 0.2  # recorded: the split itself is fixed in the store
    seed: int = 42
    pretrained: bool | None = None  # None: use ImageNet weights when torchvision can load them
    num_workers: int = 0
    lr_find_iters: int = 100
    activate: bool = True

    def check(self):
        """Raise TrainingRefused for settings that cannot work."""
        if self.arch not in ARCHS:
            raise TrainingRefused(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if not 16 <= self.size <= 1024:
            raise TrainingRefused("the image size must be between 16 and 1024 pixels")
        if self.epochs < 0 or self.fine_tune_epochs < 0 or self.epochs + self.fine_tune_epochs == 0:
            raise TrainingRefused("train for at least one epoch")
        if max(self.epochs, self.fine_tune_epochs) > MAX_EPOCHS:
            raise TrainingRefused(f"train for at most {MAX_EPOCHS} epochs per stage")
        if not 2 <= self.bs <= 1024:
            raise TrainingRefused("the batch size must be between 2 and 1024")
        if self.lr is not None and not 0 < self.lr < 10:
            raise TrainingRefused("the learning rate must be between 0 and 10")


def manifest_path(data_dir):
    """Return cleaned.csv's path, or refuse if it is missing."""
    path = Path(data_dir) / CLEANED_CSV
    if not path.is_file():
        raise TrainingRefused(f"{CLEANED_CSV} does not exist yet: add and label some images first")
    return path


def read_manifest_file(path):
    """Return a cleaned.csv file's rows as dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_manifest(data_dir):
    """Return cleaned.csv's rows as dicts, or refuse if it is missing."""
    return read_manifest_file(manifest_path(data_dir))


def dataset_counts(rows):
    """Return {class: {"train": n, "valid": n}} from cleaned.csv rows."""
    counts = {}
    for r in rows:
        split = "valid" if r["is_valid"] == "True" else "train"
        counts.setdefault(r["label"], Counter())[split] += 1
    return {k: {"train": v["train"], "valid": v["valid"]} for k, v in sorted(counts.items())}


def check_dataset(counts):
    """Refuse datasets the recipe cannot train and validate on."""
    if len(counts) < 2:
        raise TrainingRefused(
            f"training needs at least two classes with images; {CLEANED_CSV} has {len(counts)}"
        )
    no_valid = [c for c, n in counts.items() if n["valid"] == 0]
    if no_valid:
        raise TrainingRefused(
            "these classes have no validation images, so their error cannot be measured: "
            f"{', '.join(no_valid)} (add more images: about 1 in 5 goes to validation)"
        )
    no_train = [c for c, n in counts.items() if n["train"] == 0]
    if no_train:
        raise TrainingRefused(f"these classes have no training images: {', '.join(no_train)}")


def preflight(data_dir, opts):
    """Refuse, before any job starts, options or a cleaned.csv the recipe cannot train on."""
    opts.check()
    counts = dataset_counts(read_manifest(data_dir))
    check_dataset(counts)
    return counts


def weights_cached(arch):
    """Tell whether torchvision's ImageNet weights for `arch` are in the local cache."""
    import torch
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).DEFAULT.url
    return (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()


def pretrained_weights_available(arch, allow_download=True, timeout=15):
    """Tell whether ImageNet weights can be had: in the cache, or downloaded now."""
    if weights_cached(arch):
        return True
    if not allow_download:
        return False
    from torchvision.models import get_model_weights

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        get_model_weights(arch).DEFAULT.get_state_dict(progress=False, check_hash=True)
        return True
    except Exception:
        return False
    finally:
        socket.setdefaulttimeout(old)


class TrainingCancelled(Exception):
    """An admin stopped the run; nothing was registered."""


def _finite_or(x, default):
    return float(x) if x is not None and math.isfinite(float(x)) else default


def _thin(xs, most=500):
    step = max(1, math.ceil(len(xs) / most))
    return xs[::step]


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


def build_learner(data_dir, opts, pretrained, manifest=None):
    """Create the DataLoaders from cleaned.csv (or a copy of it) and a vision learner on them."""
    import torchvision.models as tvm
    from fastai.vision.all import (ImageDataLoaders, Resize, aug_transforms, error_rate,
                                   vision_learner)

    manifest = Path(manifest or Path(data_dir) / CLEANED_CSV)
    n_train = sum(1 for r in read_manifest_file(manifest) if r["is_valid"] != "True")
    dls = ImageDataLoaders.from_csv(  # names in the csv are relative to the data dir
        data_dir, manifest, valid_col="is_valid", delimiter=",", item_tfms=Resize(opts.size),
        batch_tfms=aug_transforms(), bs=min(opts.bs, n_train), seed=opts.seed,
        num_workers=opts.num_workers, device="cpu",
    )
    learn = vision_learner(dls, getattr(tvm, opts.arch), metrics=error_rate, pretrained=pretrained)
    return learn


def _stop_if_asked(report, should_stop=None):
    if report.stopped or (should_stop and should_stop()):
        raise TrainingCancelled("training was cancelled; no model version was made")


def _fit_recipe(learn, opts, report, on_progress, should_stop):
    """Run the lesson's recipe on a learner; return (lr, (lo, hi), lr_find curves)."""
    curves = {}
    lr = opts.lr
    if lr is None:
        lr, curves["frozen"] = _lr_find(learn, report, opts.lr_find_iters, on_progress)
        _stop_if_asked(report, should_stop)
    report.phase = "frozen"
    if opts.epochs:
        learn.fit_one_cycle(opts.epochs, lr)
        _stop_if_asked(report, should_stop)
    learn.unfreeze()
    hi = lr / 5
    lo, curves["unfrozen"] = _lr_find(learn, report, opts.lr_find_iters, on_progress)
    _stop_if_asked(report, should_stop)
    lo = min(lo, hi / 10)
    report.phase = "unfrozen"
    if opts.fine_tune_epochs:
        learn.fit_one_cycle(opts.fine_tune_epochs, slice(lo, hi))
        _stop_if_asked(report, should_stop)
    return lr, (lo, hi), curves


def _export(learn, data_dir, manifest, opts, rows, log):
    """Write export.pkl, model.onnx (when it matches torch) and the cleaned.csv trained on
    into a new version folder; return (folder, onnx check)."""
    version_dir = registry.new_version_dir(data_dir)
    try:
        learn.path = version_dir
        learn.export(version_dir / registry.EXPORT)
        shutil.copyfile(manifest, version_dir / CLEANED_CSV)
        onnx = _export_onnx_checked(learn, version_dir, opts.size, data_dir, rows)
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise
    log("ONNX Runtime will serve this model." if onnx["serves"] else onnx["reason"])
    return version_dir, onnx


def train(data_dir, opts=None, on_progress=None, show_bar=False, log=print, should_stop=None):
    """Train with the lesson's recipe on cleaned.csv; register (and activate) the new version.

    `on_progress(phase=, epoch=, n_epochs=, batch=, n_batches=, loss=, last_epoch=)` is called
    per batch; when `should_stop()` turns true the fit stops and TrainingCancelled is raised
    before anything is registered.
    """
    opts = opts or TrainOptions()
    opts.check()
    data_dir = Path(data_dir)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="winnow-train-") as work:
        # Train on a copy: labels may change while it runs, and the version keeps what it saw.
        manifest = Path(work) / CLEANED_CSV
        shutil.copyfile(manifest_path(data_dir), manifest)
        rows = read_manifest_file(manifest)
        counts = dataset_counts(rows)
        check_dataset(counts)
        pretrained = _use_pretrained(opts, log, rows, counts)

        from fastai.torch_core import set_seed

        set_seed(opts.seed, reproducible=True)
        learn = build_learner(data_dir, opts, pretrained, manifest)
        learn.path = Path(work)  # lr_find's temporary weights go here, not into models/
        report = recorder.report_callback(on_progress, should_stop, opts.lr_find_iters)
        learn.add_cb(report)
        if not show_bar:
            learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
        if pretrained:
            learn.freeze()  # random weights have nothing to protect: from scratch, train it all
        lr, (lo, hi), lr_curves = _fit_recipe(learn, opts, report, on_progress, should_stop)
        learn.remove_cb(report)
        if on_progress:
            on_progress(phase="export", epoch=0, n_epochs=1, batch=0, n_batches=1, loss=None,
                        last_epoch=report.last_epoch)
        matrix, most_confused = recorder.confusion(learn)
        _stop_if_asked(report, should_stop)
        version_dir, onnx = _export(learn, data_dir, manifest, opts, rows, log)

    metrics = {
        "arch": opts.arch, "size": opts.size, "options": asdict(opts),
        "lr": lr, "lr_unfrozen": [lo, hi], "history": report.history, "lr_find": lr_curves,
        "error_rate": report.history[-1].get("error_rate") if report.history else None,
        "train_curve": {k: _thin(v) for k, v in report.curve.items()},
        "confusion": matrix, "most_confused": most_confused, "images": len(rows),
        "onnx": onnx, "pretrained": bool(pretrained), "body_frozen_first": bool(pretrained),
        "seconds": round(time.monotonic() - started, 1),
        "provenance": _provenance(counts, file_sha256(version_dir / CLEANED_CSV), opts),
    }
    version = registry.record_version(data_dir, version_dir, metrics, "trained",
                                      arch=opts.arch, size=opts.size)
    if opts.activate:
        registry.activate(data_dir, version, actor="training")
    return version, metrics


def _use_pretrained(opts, log, rows, counts):
    """Decide whether ImageNet weights are used, and say so."""
    pretrained = opts.pretrained
    if pretrained is None:
        allow = os.environ.get("WINNOW_OFFLINE", "0") != "1"
        pretrained = pretrained_weights_available(opts.arch, allow_download=allow)
    log(f"Training {opts.arch} at {opts.size}px on {len(rows)} images in {len(counts)} classes; "
        + ("starting from ImageNet weights." if pretrained else
           "ImageNet weights are not available here, so it trains from scratch "
           "(expect lower accuracy than the lesson's)."))
    return pretrained


def _export_onnx_checked(learn, version_dir, size, data_dir, rows, n_images=64):
    """Export model.onnx and compare it with torch on validation images; say whether it serves."""
    from webapp.core import images
    from webapp.model import onnx_model

    path = version_dir / onnx_model.ONNX_FILE
    try:
        onnx_model.export_onnx(learn, path, size)
        valid = [r for r in rows if r["is_valid"] == "True"][:n_images]
        pics = [images.decode((Path(data_dir) / r["name"]).read_bytes()) for r in valid]
        diff = onnx_model.check_onnx(learn, path, pics)
    except Exception as e:  # torch still serves; the reason is kept with the version
        path.unlink(missing_ok=True)
        return {"serves": False, "reason": f"ONNX export failed ({type(e).__name__}: {e}); "
                                           "the torch path serves this model"}
    serves = diff <= onnx_model.TOLERANCE
    return {"file": onnx_model.ONNX_FILE, "sha256": file_sha256(path), "max_abs_diff": diff,
            "checked_on": len(pics), "serves": serves,
            "reason": "" if serves else
            f"ONNX probabilities differ from torch by {diff:.1e} (more than "
            f"{onnx_model.TOLERANCE:g}) on the validation images; the torch path serves this model"}


def _provenance(counts, csv_sha, opts):
    import fastai
    import torch

    return {
        "classes": sorted(counts), "counts": counts, "cleaned_csv_sha256": csv_sha,
        "valid_pct": opts.valid_pct, "seed": opts.seed,
        "python": platform.python_version(), "torch": torch.__version__,
        "fastai": fastai.__version__,
    }
