"""Bring a notebook model: an export.pkl made with plain fastai (`learn.export()`).

export.pkl is a pickle, and unpickling runs whatever code it names: it must come from someone
the admin trusts. The web request only saves the upload (`stage`, under incoming/) and starts
an "import" job; the job (`import_staged`) never unpickles it either. It loads a copy in a
separate Python process (`python -m webapp.model.notebook_import export.pkl pictures.json`),
sandboxed by `core.sandbox`: no Winnow settings in its environment, a working directory of its
own, resource limits, and the uid of `nobody` when Winnow runs as root, so a malicious pickle
cannot read the admin password, secret_key or the database.

The same straight line as training, in that process: load → check (the classes, the input size,
a test prediction against `learn.predict`) → build the serving bundle (`model.bundle.build`:
fp32 ONNX checked against learn.predict, INT8 when it is as accurate). The job copies in a
sample of the data dir's pictures to check the bundle on: labelled ones measure INT8's accuracy
(only those whose label is one of the model's classes); with none, generated pictures check
fp32's parity and INT8 is refused for want of labelled pictures.

The child is untrusted: its answer is typed and capped, only the bundle's fixed file names are
taken from its folder (plain files, no links), bundle.json's sha256 is recomputed, and the
torch-free runtime loads the bundle here and re-runs its reference outputs. A bundle that fails
any of that is dropped and recorded as refused: the version is still imported, served by the
fastai path. Only then is the version recorded, with its sha256 and provenance "imported";
activating it is the admin's next, separate step.
"""
import contextlib
import importlib
import json
import math
import os
import pkgutil
import random
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from webapp.core import processes, sandbox
from webapp.core.files import file_sha256
from webapp.dataset.manifest import CLEANED_CSV
from webapp.ingest.uploads import STAGING
from webapp.model import bundle, registry, training
from webapp.model.classifier import Classifier
from webapp.runtime import bundle as rt

MODULE = "webapp.model.notebook_import"
# Loading, checking and building the bundle (tens of seconds for a resnet34 on a few cores); it
# runs in the import job's process, not a web worker, so gunicorn's timeout does not apply.
CHECK_TIMEOUT = 900  # seconds
TOLERANCE = 1e-4  # the serving path's probabilities against learn.predict's
LIMITS = sandbox.Limits(threads=min(4, os.cpu_count() or 1))
N_VALID = 200  # labelled pictures from the data dir the bundle is checked on, at most
N_GENERATED = 8  # pictures made up for the parity check when the data dir has none
SAMPLE_SEED = 0
PREFIX = "import-"  # incoming/import-<token>/: a staged export.pkl, and its bundle once checked
KEEP_SECONDS = 3 * 3600  # a staged import older than this was left by a dead job
PICTURES, LISTING = "pictures", "pictures.json"
PHASE_MARK = "winnow-import-phase: "  # the child's stderr line that starts a phase
PHASES = {"bundle": ("building the serving bundle",
                     "Exporting fp32 ONNX, checking it against learn.predict, quantising INT8 "
                     "and measuring it")}
BUNDLE_FILES = (rt.MANIFEST, rt.FP32, rt.INT8, rt.REFERENCE)  # all the parent takes
MAX_REASON = 1000  # characters of a reason given by the child
FP32_FIGURES = ("max_abs_diff", "checked_on", "accuracy")
INT8_FIGURES = ("top1_agreement", "accuracy", "fp32_accuracy", "accuracy_drop_points",
                "checked_on", "max_abs_diff")


class ImportRefused(ValueError):
    """The uploaded file cannot be served; the message says why."""


def _quiet(*args, **kwargs):
    return None


# ---- the web request: save the upload for a job --------------------------------------------

def _prune(base):
    cutoff = time.time() - KEEP_SECONDS
    for path in base.glob(PREFIX + "*"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)


def stage(data_dir, stream):
    """Save an uploaded export.pkl under incoming/ for an import job; return its token.

    Refuse an empty file, or one that is neither a pickle nor a torch archive (a zip), here.
    """
    base = Path(data_dir) / STAGING
    base.mkdir(parents=True, exist_ok=True)
    _prune(base)
    token = secrets.token_hex(8)
    folder = base / (PREFIX + token)
    folder.mkdir()
    try:
        path = folder / registry.EXPORT
        with open(path, "wb") as f:
            shutil.copyfileobj(stream, f, 1 << 20)
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            raise ImportRefused("the uploaded file is empty")
        if not (head.startswith(b"\x80") or head == b"PK\x03\x04"):
            raise ImportRefused("this is not a fastai export.pkl: it is neither a pickle nor a "
                                "torch archive")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return token


def staged_dir(data_dir, token):
    """Return a staged import's folder, or refuse if it is gone."""
    folder = Path(data_dir) / STAGING / (PREFIX + str(token))
    if not re.fullmatch(r"[0-9a-f]{16}", str(token)) or not (folder / registry.EXPORT).is_file():
        raise ImportRefused("the uploaded file is gone; upload it again")
    return folder


def discard(data_dir, token):
    """Remove a staged import that no job will take."""
    with contextlib.suppress(ImportRefused):
        shutil.rmtree(staged_dir(data_dir, token), ignore_errors=True)


def job_params(token, filename, actor="admin"):
    """Return an import job's parameters."""
    return {"token": token, "filename": filename, "actor": actor}


# ---- the import job -------------------------------------------------------------------------

def import_staged(data_dir, token, filename, actor="admin", on_progress=None, log=None,
                  timeout=CHECK_TIMEOUT):
    """Check a staged export.pkl, build and check its serving bundle, register it as a version.

    Return (version, check, the bundle's record). `on_progress(phase=, message=)` is told each
    phase, and called with nothing about twice a second while the checker runs: what it raises
    stops the import. Nothing is left behind when it is refused or stopped.
    """
    progress, say = on_progress or _quiet, log or _quiet
    folder = staged_dir(data_dir, token)
    try:
        progress(phase="checking", message=f"Loading {filename} in a sandboxed process and "
                                           "checking its predictions against learn.predict")
        check = check_in_subprocess(folder / registry.EXPORT, folder / bundle.BUNDLE_DIR,
                                    data_dir, timeout, progress, say)
        record = check.pop("bundle")
        if record["status"] == "ready":
            progress(phase="verifying the serving bundle",
                     message="Checking the bundle's files and reference outputs here, "
                             "without torch")
            record = verify_bundle(folder / bundle.BUNDLE_DIR, record, check["classes"],
                                   f"import {token}")
        say(bundle_line(record))
        progress(phase="registering", message="Recording the new version")
        version = _register(data_dir, folder, check, record, filename, actor)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return version, check, record


def _register(data_dir, folder, check, record, filename, actor):
    export = folder / registry.EXPORT
    metrics = {
        "arch": check["arch"], "size": check["size"], "classes": check["classes"],
        "error_rate": None, "history": [], "pretrained": check.get("pretrained"),
        "check": check, "bundle": record,
        "provenance": {"source": "imported", "filename": filename, "imported_by": actor,
                       "sha256": file_sha256(export), "classes": check["classes"],
                       "fastai": check.get("fastai"), "torch": check.get("torch")},
    }
    version_dir = registry.new_version_dir(data_dir)
    try:  # renames within the data dir: the folder is complete the moment it is registered
        os.replace(export, version_dir / registry.EXPORT)
        if record["status"] == "ready":
            os.replace(folder / bundle.BUNDLE_DIR, bundle.bundle_dir(version_dir))
        # Nothing more to check or score for an imported model: ready at once.
        return registry.record_version(data_dir, version_dir, metrics, "imported",
                                       arch=check["arch"], size=check["size"],
                                       status=registry.READY)
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise


def summary(version, check, record, filename):
    """Return the import job's result: the version and a sentence for its page."""
    classes = check["classes"]
    names = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
    return {"version": version, "classes": len(classes), "bundle": record.get("status"),
            "message": f"Imported {filename} as model {version} ({len(classes)} classes: "
                       f"{names}). {bundle_line(record)} Activate it when you are ready to "
                       "serve it."}


def bundle_line(record):
    """Say in a sentence what became of the serving bundle."""
    if record.get("status") != "ready":
        return (f"No serving bundle ({record.get('reason') or 'not built'}): the fastai path "
                "serves it.")
    fp32, int8 = record.get("fp32", {}), record.get("int8", {})
    line = (f"Serving bundle ready: fp32 matches learn.predict within "
            f"{fp32.get('max_abs_diff', float('nan')):.1e} on {fp32.get('checked_on')} "
            "pictures; ")
    return line + ("INT8 passed its checks." if int8.get("passed")
                   else f"INT8 not served: {int8.get('reason')}.")


def sample_pictures(data_dir, work, seed=SAMPLE_SEED):
    """Copy a sample of the data dir's pictures into the child's folder and list them there.

    From cleaned.csv (when there is one): up to N_VALID pictures with their labels, validation
    ones first, and up to bundle.N_CALIBRATION other training pictures for INT8's calibration.
    Return (validation pictures, calibration pictures) counted.
    """
    valid, train = [], []
    root = Path(data_dir).resolve()
    csv_path = root / CLEANED_CSV
    rows = training.read_manifest_file(csv_path) if csv_path.is_file() else []
    for row in rows:
        path = (root / (row.get("name") or "")).resolve()
        if path.is_relative_to(root) and path.is_file():
            (valid if row.get("is_valid") == "True" else train).append((path, row.get("label")))
    rng = random.Random(seed)
    rng.shuffle(valid)
    rng.shuffle(train)
    calibration = train[:bundle.N_CALIBRATION]
    valid = (valid + train[bundle.N_CALIBRATION:])[:N_VALID] or calibration[:N_VALID]
    (work / PICTURES).mkdir()
    listing = {"valid": [], "calibration": []}
    for key, prefix, chosen in (("valid", "v", valid), ("calibration", "c", calibration)):
        for i, (path, label) in enumerate(chosen):
            name = f"{PICTURES}/{prefix}{i}{_suffix(path)}"
            try:
                shutil.copyfile(path, work / name)
            except OSError:
                continue  # removed meanwhile: one picture fewer
            listing[key].append([name, label] if key == "valid" else name)
    (work / LISTING).write_text(json.dumps(listing))
    return len(listing["valid"]), len(listing["calibration"])


def _suffix(path):
    suffix = Path(path).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ""


def check_in_subprocess(path, bundle_to, data_dir=None, timeout=CHECK_TIMEOUT, on_progress=None,
                        log=None):
    """Load an export.pkl in a sandboxed process, checked and with its bundle built.

    Return the check, whose "bundle" is the bundle's record; a bundle the child says is ready is
    copied to `bundle_to` (its fixed file names only). Raise ImportRefused if it cannot serve.
    """
    progress, say = on_progress or _quiet, log or _quiet
    try:
        with sandbox.workdir(path) as work:
            counts = sample_pictures(data_dir, work) if data_dir else (0, 0)
            if not (work / LISTING).exists():
                (work / LISTING).write_text(json.dumps({"valid": [], "calibration": []}))
            sandbox.hand_over(work)
            say(f"Checking the bundle on {counts[0]} pictures from the data dir "
                f"({counts[1]} more to calibrate INT8)" if counts[0] else
                "No pictures in the data dir: the bundle's fp32 parity is checked on generated "
                "pictures, and INT8 cannot be measured")
            # Held from before the child starts: whatever it renames or links later, the bundle
            # is read from inside this very folder.
            folder = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                argv = processes.module_command(MODULE, path.name, LISTING)
                stopped = ""
                try:
                    proc = sandbox.run_sandboxed(
                        argv, work, timeout, LIMITS, poll=progress,
                        on_line=lambda line: _child_line(line, progress, say))
                except subprocess.TimeoutExpired as e:  # the check may have passed before it
                    proc = subprocess.CompletedProcess(argv, None, e.output or "", e.stderr or "")
                    stopped = f"it took longer than {timeout} s"
                check = _answer(proc, stopped)
                check["bundle"] = _take_bundle(folder, check.get("bundle"), Path(bundle_to))
            finally:
                os.close(folder)
    except PermissionError as e:
        raise ImportRefused(f"the checker cannot run safely: {e}") from None
    return check


def _child_line(line, progress, say):
    """Start the phase a child's marker names (by our own words); log its other lines."""
    if line.startswith(PHASE_MARK):
        phase = PHASES.get(line[len(PHASE_MARK):].strip())
        if phase:
            progress(phase=phase[0], message=phase[1])
        return
    if line.strip():
        say("checker: " + line[:500])


def _answer(proc, stopped=""):
    """Read the child's JSON lines: its check, then its bundle's record, or its error.

    `stopped` says why the parent stopped the child, if it did.
    """
    answer = {}
    for line in proc.stdout.splitlines():
        start = line.find('{"')  # after what a progress bar left on the line
        if start >= 0:
            with contextlib.suppress(ValueError):
                found = json.loads(line[start:])
                if isinstance(found, dict):
                    answer.update(found)
    check = answer.get("check")
    if not isinstance(check, dict) or "error" in answer:
        reason = (_text(answer.get("error")) or stopped or _killed(proc.returncode)
                  or _last_line(proc.stderr) or f"exit status {proc.returncode}")
        raise ImportRefused("this file is not a fastai image classifier Winnow can serve: "
                            f"{reason}")
    check = _typed_check(check)
    if "bundle" in answer:
        check["bundle"] = answer["bundle"]
    else:  # the check passed, then the child died: the import stands, without a bundle
        why = (stopped or _killed(proc.returncode) or _last_line(proc.stderr)
               or "no account of it")
        check["bundle"] = {"status": "refused",
                           "reason": f"the checker stopped while building it ({why})"}
    return check


def _text(value, most=MAX_REASON):
    return value[:most] if isinstance(value, str) else ""


def _number(value):
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _count(value, most=10 ** 6):
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= most


def _typed_check(raw):
    """Return the child's check with the types the registry and the pages expect, or refuse."""
    classes, size = raw.get("classes"), raw.get("input_size")
    if (not isinstance(classes, list) or len(classes) < 2 or len(classes) > 100_000
            or not all(isinstance(c, str) and 0 < len(c) <= 500 for c in classes)):
        raise ImportRefused("the checker's answer was not understood: no list of classes")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(_count(v, 100_000) for v in size)):
        raise ImportRefused("the checker's answer was not understood: its input size")
    prediction = raw.get("test_prediction") if isinstance(raw.get("test_prediction"), dict) else {}
    top = prediction.get("top") if isinstance(prediction.get("top"), list) else []
    diff = raw.get("max_abs_diff")
    if not _number(diff) or not diff <= TOLERANCE:
        raise ImportRefused("the checker's answer was not understood: its test prediction")
    return {
        "classes": classes, "size": size[0] if size and size[0] == size[1] else None,
        "input_size": size, "arch": _text(raw.get("arch"), 100) or None,
        "pretrained": raw.get("pretrained") if isinstance(raw.get("pretrained"), bool) else None,
        "test_prediction": {
            "label": _text(prediction.get("label"), 500),
            "top": [[_text(p[0], 500), float(p[1])] for p in top[:3]
                    if isinstance(p, list) and len(p) == 2 and _number(p[1])],
            "picture": _text(prediction.get("picture"), 100)},
        "max_abs_diff": float(diff), "fastai": _text(raw.get("fastai"), 50) or None,
        "torch": _text(raw.get("torch"), 50) or None,
    }


def _figures(raw, keys):
    return {k: raw[k] for k in keys if _number(raw.get(k))} if isinstance(raw, dict) else {}


def _refused(reason, **figures):
    return {"status": "refused", "reason": reason, **figures}


def bundle_record(raw):
    """Return the child's account of its bundle as plain typed values (a ready one in full).

    An account that does not hold together is a refused bundle.
    """
    if not isinstance(raw, dict):
        return _refused("the checker gave no account of the serving bundle")
    seconds = {"seconds": raw["seconds"]} if _number(raw.get("seconds")) else {}
    if raw.get("status") != "ready":
        return _refused(_text(raw.get("reason")) or "the checker did not build it",
                        **({"fp32": _figures(raw.get("fp32"), FP32_FIGURES)}
                           if isinstance(raw.get("fp32"), dict) else {}), **seconds)
    fp32, int8, size, sha = (raw.get("fp32"), raw.get("int8"), raw.get("input_size"),
                             raw.get("sha256"))
    whole = (isinstance(fp32, dict) and _number(fp32.get("max_abs_diff"))
             and _count(fp32.get("checked_on")) and isinstance(int8, dict)
             and isinstance(int8.get("passed"), bool) and isinstance(size, list)
             and len(size) == 2 and all(_count(v, 100_000) for v in size)
             and isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha))
    if not whole:
        return _refused("the checker's account of the bundle does not hold together", **seconds)
    figures = _figures(int8, INT8_FIGURES)
    return {"status": "ready", "reason": "", "dir": bundle.BUNDLE_DIR, "sha256": sha,
            "fp32": _figures(fp32, FP32_FIGURES),
            "int8": {"passed": int8["passed"], "reason": _text(int8.get("reason")),
                     # the report shows these together or not at all
                     **(figures if len(figures) == len(INT8_FIGURES) else {})},
            "input_size": size, **seconds}


def _take_bundle(folder, raw, dest):
    """Copy a bundle the child says is ready out of its folder; return its record."""
    record = bundle_record(raw)
    if record["status"] != "ready":
        return record
    try:
        _copy_bundle(folder, dest)
    except (ImportRefused, OSError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        return _drop(record, f"the checker's bundle folder cannot be taken: {e}")
    return record


def _copy_bundle(work_fd, dest):
    """Copy the bundle's files (fixed names, plain files, capped sizes) to dest."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        source = os.open(bundle.BUNDLE_DIR, flags | os.O_DIRECTORY, dir_fd=work_fd)
    except OSError as e:
        raise ImportRefused(f"{bundle.BUNDLE_DIR}/ is missing or not a folder "
                            f"({e.strerror})") from None
    try:
        dest.mkdir(parents=True)
        for name in BUNDLE_FILES:
            try:
                fd = os.open(name, flags, dir_fd=source)
            except FileNotFoundError:
                continue  # the files bundle.json lists are checked by the load below
            except OSError as e:
                raise ImportRefused(f"{name} cannot be read ({e.strerror})") from None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    raise ImportRefused(f"{name} is not a plain file")
                with open(dest / name, "xb") as out:
                    copied = 0
                    while chunk := f.read(1 << 20):
                        copied += len(chunk)
                        if copied > LIMITS.file_size:
                            raise ImportRefused(f"{name} is larger than the checker may write")
                        out.write(chunk)
    finally:
        os.close(source)


def _drop(record, reason, path=None):
    """Return the record of a bundle refused here (its files removed), its figures kept."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
    kept = {k: record[k] for k in ("fp32", "int8", "input_size", "seconds") if k in record}
    return _refused(reason, **kept)


def verify_bundle(path, record, classes, name):
    """Check a bundle the child built, here, as serving will: or drop it and say why.

    bundle.json's sha256 must be the one the child reported, its classes the model's, and the
    torch-free runtime must load it (every file against bundle.json, the reference outputs
    re-run on this machine).
    """
    path = Path(path)
    try:
        manifest = path / rt.MANIFEST
        digest = file_sha256(manifest) if manifest.is_file() else None
        if digest != record["sha256"]:
            raise rt.BundleError(f"{rt.MANIFEST} does not match the sha256 the checker "
                                 "reported")
        vocab = rt.read_manifest(path, digest).get("vocab")
        if not isinstance(vocab, list) or [str(v) for v in vocab] != classes:
            raise rt.BundleError("its classes are not the model's")
        predictor = rt.load(path, name, "auto", expected_sha256=digest)
    except Exception as e:  # whatever the child left is untrusted: any failure drops it
        reason = str(e) if isinstance(e, rt.BundleError) else f"{type(e).__name__}: {e}"
        return _drop(record, f"it failed the check here ({reason[:MAX_REASON]})", path)
    return {**record, "load_check": {"precision": predictor.precision, "note": predictor.note,
                                     **json.loads(json.dumps(predictor.checks))}}


def _killed(returncode):
    if returncode is None or returncode >= 0:
        return ""
    sig = signal.Signals(-returncode)
    why = {signal.SIGXCPU: "it used more CPU time than the check allows",
           signal.SIGXFSZ: "it wrote a larger file than the check allows"}
    return f"the checker was stopped by {sig.name}" + (f": {why[sig]}" if sig in why else "")


def _last_line(text):
    lines = [line for line in (text or "").strip().splitlines()
             if line.strip() and not line.startswith(PHASE_MARK)]
    return lines[-1][:500] if lines else ""


# ---- the checker: the sandboxed child ---------------------------------------------------------

def input_size(learn):
    """Return the (height, width) the learner resizes to, from its item transforms, or None."""
    pipe = getattr(learn.dls.valid, "after_item", None)
    for tfm in getattr(pipe, "fs", []):
        size = getattr(tfm, "size", None)
        if size is not None:
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            return [int(size[0]), int(size[1])]
    return None


def load(path):
    """Load an export.pkl (in THIS process: run it only in the checker)."""
    from fastai.learner import load_learner

    return load_learner(path, cpu=True)


def inspect(learn):
    """Describe a loaded learner and check Winnow's serving path on a test prediction."""
    import fastai
    import numpy as np
    import torch
    from PIL import Image

    vocab = getattr(learn.dls, "vocab", None)
    if vocab is None or len(vocab) < 2 or isinstance(vocab[0], (list, tuple)):
        raise ImportRefused("it has no list of two or more classes (dls.vocab): "
                            "Winnow serves single-label image classifiers")
    classes = [str(v) for v in vocab]
    size = input_size(learn)
    h, w = size or (224, 224)
    probe = Image.new("RGB", (w, h), (128, 128, 128))
    with learn.no_bar():
        label, _, probs = learn.predict(probe)
    ours = Classifier(learn).probabilities([probe])[0]
    theirs = probs.float().numpy()
    if ours.shape != theirs.shape or not np.all(np.isfinite(ours)):
        raise ImportRefused("its predictions are not one probability per class")
    diff = float(np.abs(ours - theirs).max())
    if diff > TOLERANCE:
        raise ImportRefused(f"Winnow's serving path differs from learn.predict by {diff:.1e}")
    arch = getattr(learn, "arch", None)
    ranked = sorted(zip(classes, map(float, ours), strict=True), key=lambda p: -p[1])
    return {"classes": classes, "size": size[0] if size and size[0] == size[1] else None,
            "input_size": size, "arch": getattr(arch, "__name__", None),
            "pretrained": getattr(learn, "pretrained", None),
            "test_prediction": {"label": str(label), "top": ranked[:3],
                                "picture": f"plain grey {w}x{h}"},
            "max_abs_diff": diff, "fastai": fastai.__version__, "torch": torch.__version__}


def generated_pictures(size, n=N_GENERATED, seed=SAMPLE_SEED):
    """Return {name: RGB picture}: gradients and noise at and around the input size (h, w)."""
    import numpy as np
    from PIL import Image

    h, w = size or (224, 224)
    rng = np.random.default_rng(seed)
    shapes = [(h, w), (h, w * 3 // 2), (h * 4 // 3, w), (h * 2, w * 2)]
    pictures = {}
    for i in range(n):
        ph, pw = shapes[i % len(shapes)]
        y, x = np.mgrid[0:ph, 0:pw]
        ramp = np.stack([x / max(pw - 1, 1), y / max(ph - 1, 1),
                         (x + y) / max(pw + ph - 2, 1)], axis=-1)
        noise = rng.random((ph, pw, 3))
        mix = (i % 3) / 2  # a gradient, a noisy gradient, noise
        pixels = np.roll(ramp, i, axis=-1) * (1 - mix) + noise * mix
        pictures[f"generated-{i}"] = Image.fromarray((pixels * 255).round().astype(np.uint8))
    return pictures


def bundle_inputs(listing, classes, size):
    """Return (valid, calibration, open_image) for bundle.build from the parent's listing.

    A label that is not one of the model's classes becomes None (the picture still checks
    parity); with no pictures at all, generated ones check parity only.
    """
    valid = [(name, label if label in classes else None)
             for name, label in listing.get("valid", [])]
    calibration = list(listing.get("calibration", []))
    generated = {} if valid else generated_pictures(size)
    valid = valid or [(name, None) for name in generated]

    def open_image(name):
        return generated[name].copy() if name in generated else bundle.open_picture(name)

    return valid, calibration, open_image


def build_bundle(learn, check, listing_path):
    """Build the serving bundle into ./bundle; return its record."""
    listing = json.loads(Path(listing_path).read_text()) if listing_path else {}
    valid, calibration, open_image = bundle_inputs(listing, check["classes"],
                                                   check["input_size"])
    return bundle.build(learn, Path(bundle.BUNDLE_DIR).resolve(), valid, calibration,
                        open_image=open_image, log=_stderr)


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


def _say(answer):
    print(json.dumps(answer), flush=True)


# Imported by the checker before it drops to `nobody`, who may not be able to read them after.
PRELOAD = (
    "encodings.latin_1",  # torch.load decodes with it
    "fastai.vision.all",  # what a lesson's export.pkl names
    "fastai.vision.core",  # the Classifier's path
    "numpy",
    "PIL.Image",
    "torch",
    "torch.onnx",  # the bundle: export, quantisation, the runtime's check
    "onnx",
    "onnxruntime",
    "onnxruntime.quantization",
    "onnxruntime.quantization.shape_inference",
    "torch.utils.serialization",  # torch.load's
)
ONNX_OPSETS = "torch.onnx._internal.torchscript_exporter"  # torch.onnx.export imports them late


def _import_libraries():
    """Import, while still able to, what loading and predicting need (`nobody` may not reach it)."""
    from PIL import Image

    for name in PRELOAD:
        importlib.import_module(name)
    Image.init()  # every image format's plugin: the pictures are decoded after the drop
    with contextlib.suppress(ImportError):  # where this torch keeps them
        package = importlib.import_module(ONNX_OPSETS)
        for found in pkgutil.iter_modules(package.__path__):
            if found.name.startswith("symbolic_opset"):
                importlib.import_module(f"{ONNX_OPSETS}.{found.name}")


def main(argv):
    """The checker process: print its check, then its bundle's record, as JSON lines.

    Or {"error": reason} when the file cannot serve. The bundle goes to ./bundle.
    """
    try:
        _import_libraries()
        sandbox.drop_privileges()  # before the first byte of the upload is read
        learn = load(argv[0])
        check = inspect(learn)
    except ImportRefused as e:
        _say({"error": str(e)})
        return 1
    except Exception as e:  # anything the pickle or fastai raises is the reason it is refused
        _say({"error": f"{type(e).__name__}: {e}"})
        return 1
    _say({"check": check})
    _stderr(PHASE_MARK + "bundle")
    try:
        record = build_bundle(learn, check, argv[1] if len(argv) > 1 else None)
    except Exception as e:  # build() answers for itself; this is the listing or the pictures
        record = {"status": "refused", "reason": f"building it failed ({type(e).__name__}: {e})"}
    _say({"bundle": record})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
