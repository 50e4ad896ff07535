"""Load a version's serving bundle and classify with it: Pillow, numpy and ONNX Runtime only.

A bundle is a folder (models/<version>/bundle/) written by webapp.model.bundle:

    bundle.json      the spec, the classes, every file's sha256 and the checks made at export
    model.onnx       the fp32 model
    model.int8.onnx  the INT8 model (static QDQ, per-channel), when quantisation worked
    reference.npz    a few validation pictures after the item steps (uint8) and the fp32 and
                     INT8 probabilities the export machine gave for them

Loading verifies every file against bundle.json (and bundle.json against the sha256 the caller
holds), then re-runs the reference pictures on this machine: fp32 must give the recorded
probabilities within PARITY, or the bundle is refused; INT8 serves only if it passed its
accuracy checks at export and still agrees with fp32 here (CPUs differ: U8 activations can
saturate without VNNI). Otherwise it falls back to fp32 and says why.
"""
import ctypes
import gc
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from webapp.core.files import file_sha256
from webapp.runtime import preprocess
from webapp.runtime.session import Session

FORMAT = 1
MANIFEST = "bundle.json"
FP32 = "model.onnx"
INT8 = "model.int8.onnx"
REFERENCE = "reference.npz"
PRECISIONS = ("auto", "fp32", "int8")
PARITY = 1e-4  # largest |probability difference| fp32 may show against the export's reference
INT8_MIN_AGREEMENT = 0.99  # top-1 agreement of INT8 with fp32, at export and on load
INT8_MAX_DRIFT = 0.02  # largest |probability difference| from the export machine's INT8 outputs

log = logging.getLogger("winnow")


class BundleError(ValueError):
    """The bundle cannot serve; the message says why."""


@dataclass
class Prediction:
    """Every class with its probability, most likely first."""

    ranked: list  # [(label, prob), ...] sorted by prob, descending

    @property
    def label(self):
        """Return the most likely label."""
        return self.ranked[0][0]


def ranked(vocab, probs):
    """Return [(label, prob), ...] for one row of probabilities, most likely first."""
    return sorted(zip(vocab, map(float, probs), strict=True), key=lambda p: -p[1])


def threads_here():
    """Return this process's share of the cores (gunicorn's post_fork sets OMP_NUM_THREADS)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


@dataclass
class Predictor:
    """Classify RGB images with one ONNX model of a bundle, as the learner's validation does."""

    version: str
    vocab: list
    spec: dict
    model_path: Path
    precision: str  # "fp32" or "int8": the model this predictor runs
    note: str = ""  # why it is not the precision asked for, or "" when it is
    checks: dict = field(default_factory=dict)  # what loading measured here
    threads: int | None = None  # ONNX Runtime intra-op threads; None: this process's share
    runtime = "onnx"

    def __post_init__(self):
        self._session, self._pid = None, None
        self._lock = threading.Lock()

    @property
    def draft_size(self):
        """The smallest (w, h) a JPEG may decode to before the exact pipeline (see core.images)."""
        return preprocess.draft_size(self.spec)

    def _session_here(self):
        # ONNX Runtime's thread pool does not survive fork: one session per process, made on
        # first use (after gunicorn's post_fork has set this worker's share of the cores).
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._session = Session(self.model_path, self.threads or threads_here())
                    self._pid = os.getpid()
        return self._session

    def probabilities(self, images):
        """Return an (n, classes) float32 array of probabilities for RGB PIL images."""
        return self._session_here().probabilities(preprocess.prepare_batch(images, self.spec))

    def predict_batch(self, images):
        """Return one Prediction per image."""
        return [Prediction(ranked(self.vocab, p)) for p in self.probabilities(images)]

    def predict(self, image):
        """Return [(label, prob), ...] for one image, most likely first."""
        return self.predict_batch([image])[0].ranked


def read_manifest(bundle_dir, expected_sha256=None):
    """Return bundle.json's contents after checking its sha256 (when given) and its format."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{MANIFEST} is missing")
    if expected_sha256 and file_sha256(path) != expected_sha256:
        raise BundleError(f"{MANIFEST} does not match the sha256 the registry recorded")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BundleError(f"{MANIFEST} is not JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"bundle format {manifest.get('format')!r}; this runtime reads {FORMAT}")
    return manifest


def verify_files(bundle_dir, manifest):
    """Check every file bundle.json lists against its sha256."""
    for name, digest in manifest["files"].items():
        path = Path(bundle_dir) / name
        if Path(name).name != name or not path.is_file():
            raise BundleError(f"{name} is missing from the bundle")
        if file_sha256(path) != digest:
            raise BundleError(f"{name} does not match its sha256 in {MANIFEST}")


def read_reference(bundle_dir):
    """Return the reference pictures and the export machine's probabilities for them."""
    with np.load(Path(bundle_dir) / REFERENCE, allow_pickle=False) as ref:
        return {k: ref[k] for k in ref.files}


def int8_recheck(probs, reference):
    """Compare this machine's INT8 probabilities with the export's; return (figures, reason)."""
    fp32, int8_then = reference["fp32"], reference["int8"]
    agreement = float(np.mean(probs.argmax(1) == fp32.argmax(1)))
    agreement_then = float(np.mean(int8_then.argmax(1) == fp32.argmax(1)))
    drift = float(np.abs(probs - int8_then).max())
    figures = {"top1_agreement": agreement, "max_drift": drift, "on": len(fp32)}
    if agreement < min(INT8_MIN_AGREEMENT, agreement_then):
        return figures, (f"INT8 agrees with fp32 on {agreement:.0%} of the reference pictures on "
                         f"this machine ({agreement_then:.0%} where the bundle was made)")
    if drift > INT8_MAX_DRIFT:
        return figures, (f"INT8 probabilities differ by {drift:.3f} from the ones measured where "
                         f"the bundle was made (at most {INT8_MAX_DRIFT} allowed)")
    return figures, ""


def _run(path, pixels, spec):
    return Session(path, threads_here()).probabilities(preprocess.batch_input(pixels, spec))


def _give_back_memory():
    """Hand the check sessions' freed memory back to the system (glibc keeps it otherwise).

    Measured (bench/predict.py, resnet34): without it a fresh worker sat at 270-308 MB in about
    one run in four, depending on whether malloc returned the check sessions' arenas.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def load(bundle_dir, version, precision="auto", expected_sha256=None, threads=None):
    """Return a Predictor for the bundle, after verifying it and checking it on this machine.

    precision: "auto" serves INT8 when it passed its checks at export and here, else fp32;
    "fp32" always serves fp32; "int8" serves INT8 whenever the bundle has it, checks or not
    (the note says what they found). Raise BundleError if fp32 itself cannot serve.
    """
    if precision not in PRECISIONS:
        raise BundleError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir, expected_sha256)
    verify_files(bundle_dir, manifest)
    spec, vocab = manifest["spec"], [str(v) for v in manifest["vocab"]]
    preprocess.check_format(spec)
    reference = read_reference(bundle_dir)
    fp32 = _run(bundle_dir / FP32, reference["pixels"], spec)
    diff = float(np.abs(fp32 - reference["fp32"]).max())
    checks = {"fp32_max_abs_diff": diff, "on": len(fp32)}
    if not diff <= PARITY:
        raise BundleError(f"fp32 probabilities differ by {diff:.1e} from the bundle's reference "
                          f"on this machine (at most {PARITY:g} allowed)")
    chosen, note = "fp32", ""
    int8_info = manifest.get("int8") or {}
    if precision != "fp32":
        if INT8 not in manifest["files"]:
            note = f"no INT8 model: {int8_info.get('reason') or 'none was made'}"
        else:
            figures, reason = int8_recheck(_run(bundle_dir / INT8, reference["pixels"], spec),
                                           reference)
            checks["int8"] = figures
            if not int8_info.get("passed"):
                reason = int8_info.get("reason") or "INT8 did not pass its checks at export"
            if precision == "int8":
                chosen, note = "int8", (f"INT8 forced by WINNOW_PRECISION despite: {reason}"
                                        if reason else "")
            elif reason:
                note = f"serving fp32: {reason}"
            else:
                chosen = "int8"
    if note:
        log.warning("model %s: %s", version, note)
    _give_back_memory()
    return Predictor(version, vocab, spec, bundle_dir / (INT8 if chosen == "int8" else FP32),
                     chosen, note, checks, threads)
