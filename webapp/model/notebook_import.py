"""Bring a notebook model: an export.pkl made with plain fastai (`learn.export()`).

export.pkl is a pickle, and unpickling runs whatever code it names: it must come from someone
the admin trusts. The app never unpickles an upload in a web worker. It saves the file into a
new version folder and loads a copy in a separate Python process (`python -m
webapp.model.notebook_import export.pkl`), sandboxed by `core.sandbox`: no Winnow settings in
its environment, an empty working directory, resource limits, and the uid of `nobody` when Winnow
runs as root, so a malicious pickle cannot read the admin password, secret_key or the database.
The checker answers with the classes, the input size and a test prediction (checked against
`learn.predict`), or with the reason it cannot serve it. Only then is the version recorded, with
its sha256 and provenance "imported"; activating it is the admin's next, separate step.
"""
import importlib
import json
import shutil
import signal
import subprocess
import sys

from webapp.core import processes, sandbox
from webapp.core.files import file_sha256
from webapp.model import registry
from webapp.model.classifier import Classifier

CHECK_TIMEOUT = 100  # seconds; below gunicorn's worker timeout (120 s)
TOLERANCE = 1e-4  # the serving path's probabilities against learn.predict's


class ImportRefused(ValueError):
    """The uploaded file cannot be served; the message says why."""


def import_export_pkl(data_dir, stream, filename, actor="admin", timeout=CHECK_TIMEOUT):
    """Save an uploaded export.pkl as a new version after checking it in another process.

    Return (version, check). Nothing is left behind when it is refused.
    """
    version_dir = registry.new_version_dir(data_dir)
    try:
        path = version_dir / registry.EXPORT
        with open(path, "wb") as f:
            shutil.copyfileobj(stream, f, 1 << 20)
        if path.stat().st_size == 0:
            raise ImportRefused("the uploaded file is empty")
        check = check_in_subprocess(path, timeout)
        metrics = {
            "arch": check["arch"], "size": check["size"], "classes": check["classes"],
            "error_rate": None, "history": [], "pretrained": check.get("pretrained"),
            "check": check,
            "provenance": {"source": "imported", "filename": filename, "imported_by": actor,
                           "sha256": file_sha256(path), "classes": check["classes"],
                           "fastai": check.get("fastai"), "torch": check.get("torch")},
        }
        # Nothing more to check or score for an imported model: ready at once.
        version = registry.record_version(data_dir, version_dir, metrics, "imported",
                                          arch=check["arch"], size=check["size"],
                                          status=registry.READY)
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise
    return version, check


def check_in_subprocess(path, timeout=CHECK_TIMEOUT):
    """Load an export.pkl in a sandboxed process; return what it found, or raise ImportRefused."""
    try:
        with sandbox.workdir(path) as work:
            argv = processes.module_command("webapp.model.notebook_import", path.name)
            proc = sandbox.run_sandboxed(argv, work, timeout)
    except subprocess.TimeoutExpired:
        raise ImportRefused(
            f"loading the file took longer than {timeout} s; not imported") from None
    except PermissionError as e:
        raise ImportRefused(f"the checker cannot run safely: {e}") from None
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if proc.returncode != 0 or "error" in answer or "classes" not in answer:
        reason = (answer.get("error") or _killed(proc.returncode) or _last_line(proc.stderr)
                  or f"exit status {proc.returncode}")
        raise ImportRefused("this file is not a fastai image classifier Winnow can serve: "
                            f"{reason}")
    return answer


def _killed(returncode):
    if returncode >= 0:
        return ""
    sig = signal.Signals(-returncode)
    why = {signal.SIGXCPU: "it used more CPU time than the check allows",
           signal.SIGXFSZ: "it wrote a larger file than the check allows"}
    return f"the checker was stopped by {sig.name}" + (f": {why[sig]}" if sig in why else "")


def _last_line(text):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def input_size(learn):
    """Return the (height, width) the learner resizes to, from its item transforms, or None."""
    pipe = getattr(learn.dls.valid, "after_item", None)
    for tfm in getattr(pipe, "fs", []):
        size = getattr(tfm, "size", None)
        if size is not None:
            size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
            return [int(size[0]), int(size[1])]
    return None


def inspect(path):
    """Load an export.pkl (in THIS process: run it only in the checker) and describe it."""
    import fastai
    import numpy as np
    import torch
    from fastai.learner import load_learner
    from PIL import Image


    learn = load_learner(path, cpu=True)
    vocab = getattr(learn.dls, "vocab", None)
    if vocab is None or len(vocab) < 2 or isinstance(vocab[0], (list, tuple)):
        raise ImportRefused("it has no list of two or more classes (dls.vocab): "
                            "Winnow serves single-label image classifiers")
    classes = [str(v) for v in vocab]
    size = input_size(learn)
    h, w = size or (224, 224)
    probe = Image.new("RGB", (w, h), (128, 128, 128))
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


# Imported by the checker before it drops to `nobody`, who may not be able to read them after.
PRELOAD = (
    "encodings.latin_1",  # torch.load decodes with it
    "fastai.vision.all",  # what a lesson's export.pkl names
    "fastai.vision.core",  # the Classifier's path
    "numpy",
    "PIL.Image",
    "torch",
)


def _import_libraries():
    """Import, while still able to, what loading and predicting need (`nobody` may not reach it)."""
    for name in PRELOAD:
        importlib.import_module(name)


def main(argv):
    """The checker process: print one JSON line, the description or {"error": reason}."""
    try:
        _import_libraries()
        sandbox.drop_privileges()  # before the first byte of the upload is read
        answer = inspect(argv[0])
    except ImportRefused as e:
        answer = {"error": str(e)}
    except Exception as e:  # anything the pickle or fastai raises is the reason it is refused
        answer = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(answer), flush=True)
    return 0 if "error" not in answer else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
