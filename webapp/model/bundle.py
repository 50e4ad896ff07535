"""Build a version's serving bundle from its learner, and check it before it may serve.

One step, the same after training and after a notebook import (DESIGN §3): export the fp32
ONNX model at the spec's input size → check the torch-free runtime against the learner on the
validation pictures (within PARITY, or no bundle) → quantise to INT8 (static QDQ, per-channel,
calibrated on training pictures) → measure INT8 against fp32 and the labels → keep reference
outputs for the load-time checks → write bundle.json last, with every file's sha256.

The returned record goes into metrics.json as "bundle"; a refused bundle records why, and that
version is served by the fastai path.
"""
import json
import shutil
import time
from pathlib import Path

import numpy as np

from webapp.core import files, images
from webapp.core.files import file_sha256
from webapp.model.bundle_spec import SpecRefused, preprocessing_spec
from webapp.model.classifier import Classifier
from webapp.runtime import bundle as rt, preprocess
from webapp.runtime.session import Session

BUNDLE_DIR = "bundle"
BATCH = 32
N_REFERENCE = 16  # pictures kept for the load-time checks
N_CALIBRATION = 64  # training pictures the INT8 ranges are measured on
MAX_CHECKED = 2000  # validation pictures the checks run on, at most
MAX_DROP_POINTS = 0.5  # INT8 may lose at most this much accuracy (percentage points) ...
SMALL_SET = 200  # ... or, on a validation set smaller than this, at most one picture


def bundle_dir(version_dir):
    """Return a version's bundle folder."""
    return Path(version_dir) / BUNDLE_DIR


def export_fp32(learn, path, height, width):
    """Export the learner's model (eval mode, any batch size) to an ONNX file."""
    import torch

    model = learn.model.eval()
    torch.onnx.export(model, (torch.zeros(1, 3, height, width),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def open_picture(path):
    """Decode a stored picture as serving does (orientation applied, RGB)."""
    return images.decode(Path(path).read_bytes())


def _batches(paths, open_image, size=BATCH):
    """Yield lists of decoded pictures, a batch at a time (a validation set may not fit in RAM)."""
    for i in range(0, len(paths), size):
        yield [open_image(p) for p in paths[i:i + size]]


def _run(session, paths, spec, open_image):
    return np.concatenate([session.probabilities(preprocess.prepare_batch(b, spec))
                           for b in _batches(paths, open_image)])


def _calibration_reader(pictures, spec, open_image):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feed the quantiser one prepared picture at a time (as the runtime prepares it)."""

        def __init__(self):
            self._left = iter(pictures)

        def get_next(self):
            path = next(self._left, None)
            return None if path is None else {"input": preprocess.prepare(open_image(path), spec)}

    return Reader()


def quantize_int8(fp32_path, int8_path, calibration, spec, open_image=open_picture):
    """Write the INT8 model: static QDQ, per-channel weights (S8), U8 activations, MinMax ranges."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = Path(int8_path).with_suffix(".pre.onnx")
    try:
        try:  # folds and infers shapes, as ONNX Runtime advises before quantising
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            source = prepared
        except Exception:
            source = fp32_path
        reader = _calibration_reader(calibration, spec, open_image)
        quantize_static(str(source), str(int8_path), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)


def int8_verdict(fp32_probs, int8_probs, labels):
    """Return the INT8 figures on labelled validation pictures and whether it may serve."""
    n = len(labels)
    agreement = float(np.mean(int8_probs.argmax(1) == fp32_probs.argmax(1)))
    fp32_right = int((fp32_probs.argmax(1) == labels).sum())
    int8_right = int((int8_probs.argmax(1) == labels).sum())
    drop = 100.0 * (fp32_right - int8_right) / n
    figures = {"top1_agreement": agreement, "accuracy": int8_right / n,
               "fp32_accuracy": fp32_right / n, "accuracy_drop_points": drop, "checked_on": n,
               "max_abs_diff": float(np.abs(int8_probs - fp32_probs).max())}
    if agreement < rt.INT8_MIN_AGREEMENT:
        reason = (f"INT8 agrees with fp32 on {agreement:.1%} of the validation pictures "
                  f"(at least {rt.INT8_MIN_AGREEMENT:.0%} needed)")
    elif n < SMALL_SET and fp32_right - int8_right > 1:
        reason = (f"INT8 gets {fp32_right - int8_right} more of the {n} validation pictures wrong "
                  f"than fp32 (at most 1 allowed on fewer than {SMALL_SET})")
    elif n >= SMALL_SET and drop > MAX_DROP_POINTS:
        reason = (f"INT8 loses {drop:.2f} points of accuracy (at most {MAX_DROP_POINTS} allowed)")
    else:
        reason = ""
    return {**figures, "passed": not reason, "reason": reason}


def build(learn, out_dir, valid, calibration, open_image=open_picture, log=print):
    """Build and check the bundle for `learn` in out_dir; return its record for metrics.json.

    valid: [(picture path, label or None)] from the validation split; calibration: training
    picture paths; open_image(path) decodes one. Nothing is left in out_dir when it is refused.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    try:
        record = _build(learn, out_dir, valid[:MAX_CHECKED], calibration, open_image, log)
    except SpecRefused as e:
        record = {"status": "refused", "reason": f"the preprocessing cannot be reproduced: {e}"}
    except Exception as e:  # the fastai path still serves; the reason is kept with the version
        record = {"status": "refused", "reason": f"building it failed ({type(e).__name__}: {e})"}
    if record["status"] != "ready":
        shutil.rmtree(out_dir, ignore_errors=True)
        log(f"No serving bundle: {record['reason']}; the fastai path serves this model.")
    record["seconds"] = round(time.monotonic() - started, 1)
    return record


def _build(learn, out_dir, valid, calibration, open_image, log):
    spec = preprocessing_spec(learn)
    vocab = [str(v) for v in learn.dls.vocab]
    if not valid:
        raise ValueError("no validation pictures to check it on")
    out_dir.mkdir(parents=True, exist_ok=True)
    height, width = preprocess.input_size(spec)
    export_fp32(learn, out_dir / rt.FP32, height, width)

    paths = [p for p, _ in valid]
    fp32_probs, parity = _fp32_parity(Classifier(learn), Session(out_dir / rt.FP32, threads=0),
                                      paths, spec, open_image)
    fp32_record = {"max_abs_diff": parity, "checked_on": len(paths)}
    if not parity <= rt.PARITY:
        return {"status": "refused", "fp32": fp32_record,
                "reason": f"the runtime's fp32 probabilities differ from learn.predict by "
                          f"{parity:.1e} (at most {rt.PARITY:g} allowed)"}
    log(f"Serving bundle: fp32 matches learn.predict within {parity:.1e} "
        f"on {len(paths)} validation pictures.")

    labelled = [i for i, (_, label) in enumerate(valid) if label in vocab]
    labels = np.array([vocab.index(valid[i][1]) for i in labelled], dtype=np.int64)
    if labelled:
        fp32_record["accuracy"] = float(np.mean(fp32_probs[labelled].argmax(1) == labels))
    int8_probs, int8 = _int8(out_dir, spec, calibration, paths, open_image, fp32_probs,
                             labelled, labels)
    log("INT8: " + (f"serves (agreement {int8['top1_agreement']:.1%}, accuracy "
                    f"{int8['accuracy']:.1%} against fp32's {int8['fp32_accuracy']:.1%})."
                    if int8["passed"] else f"not served: {int8['reason']}."))

    unlabelled = [i for i in range(len(valid)) if i not in set(labelled)]
    keep = (labelled + unlabelled)[:N_REFERENCE]
    reference = {"pixels": np.stack([preprocess.item_pixels(open_image(paths[i]), spec)
                                     for i in keep]),
                 "fp32": fp32_probs[keep].astype(np.float32)}
    if int8_probs is not None:
        reference["int8"] = int8_probs[keep].astype(np.float32)
    np.savez_compressed(out_dir / rt.REFERENCE, **reference)

    names = [rt.FP32, rt.REFERENCE] + ([rt.INT8] if int8_probs is not None else [])
    manifest = {"format": rt.FORMAT, "vocab": vocab, "spec": spec,
                "files": {name: file_sha256(out_dir / name) for name in names},
                "fp32": fp32_record, "int8": int8}
    files.write_atomic(out_dir / rt.MANIFEST, json.dumps(manifest, indent=2))
    return {"status": "ready", "reason": "", "dir": BUNDLE_DIR,
            "sha256": file_sha256(out_dir / rt.MANIFEST), "fp32": fp32_record, "int8": int8,
            "input_size": [height, width]}


def _fp32_parity(classifier, fp32, paths, spec, open_image):
    """Return fp32's probabilities and its largest difference from the fastai path, decoding
    each picture once for both."""
    fp32_probs, diffs = [], []
    for batch in _batches(paths, open_image):
        probs = fp32.probabilities(preprocess.prepare_batch(batch, spec))
        diffs.append(np.abs(probs - classifier.probabilities(batch)).max())
        fp32_probs.append(probs)
    return np.concatenate(fp32_probs), float(np.max(diffs))  # a NaN stays NaN: refused


def _int8(out_dir, spec, calibration, paths, open_image, fp32_probs, labelled, labels):
    """Quantise and judge INT8; return (its probabilities or None, its record)."""
    if not labelled:
        return None, {"passed": False, "reason": "no labelled validation pictures to measure "
                                                 "INT8's accuracy on"}
    if not calibration:
        return None, {"passed": False, "reason": "no training pictures to calibrate INT8 on"}
    try:
        quantize_int8(out_dir / rt.FP32, out_dir / rt.INT8, calibration[:N_CALIBRATION], spec,
                      open_image)
    except Exception as e:
        (out_dir / rt.INT8).unlink(missing_ok=True)
        return None, {"passed": False, "reason": f"quantisation failed ({type(e).__name__}: {e})"}
    int8_probs = _run(Session(out_dir / rt.INT8, threads=0), paths, spec, open_image)
    return int8_probs, int8_verdict(fp32_probs[labelled], int8_probs[labelled], labels)
