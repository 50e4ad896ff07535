"""Classify untrusted image bytes with the shared classifier (no Flask here)."""
import base64
import io

from webapp.core import images

THUMBNAIL = 512
NO_MODEL = "no model is active yet: train one or activate a version"


class NoModel(RuntimeError):
    """No model is active yet."""


def classify_bytes(classifier, data, max_pixels=images.DEFAULT_MAX_PIXELS):
    """Decode image bytes and return (ranked predictions, decoded image); raise ImageRejected."""
    if classifier is None:
        raise NoModel(NO_MODEL)
    image = images.decode(data, max_pixels)
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
