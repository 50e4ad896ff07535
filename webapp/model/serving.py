"""Choose what serves a version, and classify untrusted image bytes with it (no Flask here).

A version whose serving bundle passed its checks is served by the torch-free runtime (INT8 or
fp32, per the precision setting and the load-time checks); any other version, or a bundle that
fails on this machine, by the fastai Classifier, which loads export.pkl. Either answers
`predict`, `predict_batch` and `probabilities`, and says how it serves in `runtime`,
`precision` and `note`.
"""
import base64
import io
import logging

from webapp.core import images
from webapp.model import bundle, registry
from webapp.model.classifier import Classifier
from webapp.runtime import bundle as rt

THUMBNAIL = 512
NO_MODEL = "no model is active yet: train one or activate a version"


log = logging.getLogger("winnow")


class NoModel(RuntimeError):
    """No model is active yet."""


def bundle_status(record):
    """Return (can the runtime serve it, why not) for a version's record."""
    info = record["metrics"].get("bundle")
    if info is None:
        return False, "no serving bundle (made before serving bundles)"
    if info.get("status") != "ready":
        return False, f"its serving bundle was refused: {info.get('reason')}"
    return True, ""


def load_served(data_dir, version, precision="auto"):
    """Return what serves `version`: the runtime on its bundle if it can, else the fastai path."""
    record = registry.version_record(data_dir, version)
    # The version as a whole must be the one recorded, even where its bundle serves: a changed
    # export.pkl means someone else wrote to the registry.
    registry.verified_export_path(data_dir, version)
    usable, note = bundle_status(record)
    if usable:
        path = bundle.bundle_dir(registry.models_dir(data_dir) / version)
        try:
            return rt.load(path, version, precision,
                           expected_sha256=record["metrics"]["bundle"]["sha256"])
        except (rt.BundleError, OSError, ValueError, KeyError) as e:
            note = f"its serving bundle cannot serve on this machine: {e}"
            log.warning("model %s: %s; the fastai path serves it", version, note)
    classifier = Classifier(registry.load_learner_verified(data_dir, version), version)
    classifier.note = f"served by fastai: {note}"
    return classifier


def classify_bytes(classifier, data, max_pixels=images.DEFAULT_MAX_PIXELS):
    """Decode image bytes and return (ranked predictions, decoded image); raise ImageRejected.

    The runtime lets a large JPEG decode at a reduced size (never below twice its input size);
    the fastai path decodes in full, as learn.predict does.
    """
    if classifier is None:
        raise NoModel(NO_MODEL)
    image = images.decode(data, max_pixels, draft=classifier.draft_size)
    return classifier.predict(image), image


def api_answer(ranked, version):
    """Return the JSON contract: {"predictions": [[label, prob], ...], "model": version}."""
    return {"predictions": [[label, round(prob, 6)] for label, prob in ranked], "model": version}


def thumbnail_data_url(image):
    """Return a small JPEG of the image as a data: URL, to show it on the result page."""
    im = image.copy()
    im.thumbnail((THUMBNAIL, THUMBNAIL))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
