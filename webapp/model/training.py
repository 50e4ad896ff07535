"""Training with the recipe (recipe.py), from cleaned.csv into a new model version."""
import csv
import math
import os
import platform
import random
import shutil
import socket
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from webapp.core import processes
from webapp.core.files import file_sha256
from webapp.dataset.manifest import CLEANED_CSV
from webapp.model import bundle, recipe, recorder, registry

# The recipe's names, where callers have always found them (`X as X` marks a re-export).
from webapp.model.recipe import (
    ARCHS as ARCHS,
    TrainingCancelled as TrainingCancelled,
    TrainingRefused as TrainingRefused,
    TrainOptions as TrainOptions,
    build_learner as build_learner,
)

WORK_DIR = "tmp"  # under the data dir: a killed run's files are found and swept


def work_root(data_dir):
    """Return (and create) the data dir's tmp/ folder, where training runs keep their files."""
    root = Path(data_dir) / WORK_DIR
    root.mkdir(exist_ok=True)
    return root


def sweep_work_dirs(data_dir):
    """Remove what killed training runs left in tmp/ (a run's folder names its process)."""
    swept = []
    for path in Path(data_dir, WORK_DIR).glob("train-*-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not processes.pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path.name)
    return swept


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


def _thin(xs, most=500):
    step = max(1, math.ceil(len(xs) / most))
    return xs[::step]


def _export(learn, data_dir, manifest, rows, log):
    """Write export.pkl, the cleaned.csv trained on and the serving bundle (checked) into a new
    version folder; return (folder, bundle record)."""
    version_dir = registry.new_version_dir(data_dir)
    try:
        learn.path = version_dir
        learn.export(version_dir / registry.EXPORT)
        shutil.copyfile(manifest, version_dir / CLEANED_CSV)
        valid, calibration = bundle_pictures(data_dir, rows)
        record = bundle.build(learn, bundle.bundle_dir(version_dir), valid, calibration, log=log)
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise
    return version_dir, record


def bundle_pictures(data_dir, rows, seed=0):
    """Return the bundle's pictures from cleaned.csv rows: [(path, label)] of the validation
    split, and a seeded sample of training paths to calibrate INT8 on."""
    valid = [(Path(data_dir) / r["name"], r["label"]) for r in rows if r["is_valid"] == "True"]
    train = [Path(data_dir) / r["name"] for r in rows if r["is_valid"] != "True"]
    random.Random(seed).shuffle(train)
    return valid, train[:bundle.N_CALIBRATION]


def train(data_dir, opts=None, on_progress=None, log=print, should_stop=None):
    """Train with the recipe (recipe.py) on cleaned.csv; register (and activate) the new version.

    `on_progress` hears what recipe.fit_recipe's does, then the "export" phase; when
    `should_stop()` turns true the fit stops and TrainingCancelled is raised before anything is
    registered.
    """
    opts = opts or TrainOptions()
    opts.check()
    data_dir = Path(data_dir)
    started = time.monotonic()
    sweep_work_dirs(data_dir)
    prefix = f"train-{os.getpid()}-"
    with tempfile.TemporaryDirectory(prefix=prefix, dir=work_root(data_dir)) as work:
        # Train on a copy: labels may change while it runs, and the version keeps what it saw.
        manifest = Path(work) / CLEANED_CSV
        shutil.copyfile(manifest_path(data_dir), manifest)
        rows = read_manifest_file(manifest)
        counts = dataset_counts(rows)
        check_dataset(counts)
        pretrained = _use_pretrained(opts, log, rows, counts)
        learn = build_learner(data_dir, opts, pretrained, manifest)
        learn.path = Path(work)  # lr_find's temporary weights go here, not into models/
        setup = round(time.monotonic() - started, 2)
        fit = recipe.fit_recipe(learn, opts, pretrained, on_progress, should_stop)
        log(f"Recipe: {fit.said}.")
        report = fit.report
        if on_progress:
            on_progress(phase="export", epoch=0, n_epochs=1, batch=0, n_batches=1, loss=None,
                        last_epoch=report.last_epoch)
        exporting = time.monotonic()
        matrix, most_confused = recorder.confusion(learn)
        recipe.stop_if_asked(should_stop)
        version_dir, served_by = _export(learn, data_dir, manifest, rows, log)
        exported = round(time.monotonic() - exporting, 2)

    metrics = {
        "arch": opts.arch, "size": opts.size, "options": asdict(opts),
        "recipe": fit.said, "lr": fit.lr, "lr_unfrozen": list(fit.lr_unfrozen),
        "history": report.history, "lr_find": fit.lr_find,
        "error_rate": report.history[-1].get("error_rate") if report.history else None,
        "train_curve": {k: _thin(v) for k, v in report.curve.items()},
        "confusion": matrix, "most_confused": most_confused, "images": len(rows),
        "bundle": served_by, "pretrained": bool(pretrained), "body_frozen_first": bool(pretrained),
        "seconds": round(time.monotonic() - started, 1),
        # Where the time went; the train job adds its scoring once it is done.
        "phase_seconds": {"setup": setup, **fit.seconds, "export": exported},
        "provenance": _provenance(counts, file_sha256(version_dir / CLEANED_CSV), opts),
    }
    # Activated here, it is finished; otherwise the caller (the train job) scores it first and
    # marks it ready, and until then it is pending: never listed, never served.
    version = registry.record_version(
        data_dir, version_dir, metrics, "trained", arch=opts.arch, size=opts.size,
        status=registry.READY if opts.activate else registry.PENDING)
    if opts.activate:
        registry.activate(data_dir, version, actor="training")
    return version, metrics


def _use_pretrained(opts, log, rows, counts):
    """Decide whether ImageNet weights are used, and say so."""
    pretrained = opts.pretrained
    if pretrained is None:
        pretrained = pretrained_weights_available(opts.arch,
                                                  allow_download=opts.download_weights)
    log(f"Training {opts.arch} at {opts.size}px on {len(rows)} images in {len(counts)} classes; "
        + ("starting from ImageNet weights." if pretrained else
           "ImageNet weights are not available here, so it trains from scratch "
           "(expect lower accuracy than the lesson's)."))
    return pretrained


def _provenance(counts, csv_sha, opts):
    import fastai
    import torch

    return {
        "classes": sorted(counts), "counts": counts, "cleaned_csv_sha256": csv_sha,
        "valid_pct": opts.valid_pct, "seed": opts.seed,
        "python": platform.python_version(), "torch": torch.__version__,
        "fastai": fastai.__version__,
    }
