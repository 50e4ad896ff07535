"""Image intake: decode untrusted bytes safely into what the model sees."""
import io
import warnings
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

# iPhones send HEIC; the plugin decodes it under Pillow's own checks, including the pixel cap.
# It applies the file's irot/imir itself and resets the EXIF orientation to 1, as the HEIF spec
# asks, so the exif_transpose in _to_rgb does not turn the picture a second time.
pillow_heif.register_heif_opener()

# Formats we accept, as Pillow names them, and the extension we store them under.
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif",
           "HEIF": "png"}
# Pillow reads AVIF itself when it was built with libavif.
if features.check("avif"):
    FORMATS["AVIF"] = "png"
# Always stored as PNG: GIF for its palette and frames; HEIF and AVIF because plain fastai on a
# Pillow without the plugin or libavif (an exported dataset used elsewhere) cannot read them.
ALWAYS_NORMALISED = {"GIF", "HEIF", "AVIF"}
# The names people know: an iPhone's file ends in .HEIC.
SHOWN_AS = {"WEBP": "WebP", "HEIF": "HEIC/HEIF"}
ACCEPTED = ", ".join(SHOWN_AS.get(f, f) for f in FORMATS)
# Modes that fastai's PILImage.create turns into RGB exactly as we do.
PLAIN_MODES = {"RGB", "L"}
ORIENTATION_TAG = 0x0112
DEFAULT_MAX_PIXELS = 25_000_000

# Truncated files must fail at intake, never later in a training batch.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRejected(ValueError):
    """The bytes are not an image Winnow accepts; the message says why."""


@dataclass
class Intake:
    """A decoded image and the bytes to store for it."""

    image: Image.Image  # RGB, orientation applied: what the model sees
    format: str  # detected format of the original bytes, e.g. "JPEG"
    data: bytes  # bytes to store: the original, or a lossless PNG when normalised
    ext: str  # extension that matches `data`
    normalised: bool

    @property
    def width(self):
        return self.image.width

    @property
    def height(self):
        return self.image.height


def _open(data, max_pixels, draft=None):
    """Open and fully decode the first frame, refusing what we do not accept.

    With `draft` (w, h), a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that stays
    at least that large: a 12 MP photo decodes in a fraction of the time. The pixel cap is
    checked on the file's own size first, so a bomb is refused whatever the draft.
    """
    if not data:
        raise ImageRejected("the file is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except UnidentifiedImageError:
            raise ImageRejected(f"not an image Winnow accepts ({ACCEPTED})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected("the image has too many pixels") from None
        except Exception as e:  # Pillow raises many kinds on malformed headers
            raise ImageRejected(f"the image header is damaged or truncated ({e})") from None
        if im.width * im.height > max_pixels:
            raise ImageRejected(
                f"the image is {im.width}×{im.height} pixels; "
                f"the limit is {max_pixels / 1e6:g} megapixels"
            )
        if im.width < 1 or im.height < 1:
            raise ImageRejected("the image has no pixels")
        try:
            im.seek(0)
            if draft and im.format == "JPEG":
                im.draft(None, tuple(draft))
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected("the image has too many pixels") from None
        except Exception as e:
            raise ImageRejected(f"the image data is damaged or truncated ({e})") from None
    return im


def _needs_normalising(im):
    """Tell whether a plain `.convert('RGB')` of the stored bytes would differ from ours."""
    if im.mode not in PLAIN_MODES or im.format in ALWAYS_NORMALISED:
        return True
    if getattr(im, "n_frames", 1) > 1:
        return True
    orientation = im.getexif().get(ORIENTATION_TAG, 1)
    return orientation not in (None, 1)


def _to_rgb(im):
    """Return the image in RGB: orientation applied, alpha over white, 16-bit scaled."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.uint16)
        im = Image.fromarray((arr >> 8).astype(np.uint8), "L")
    elif im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray((np.clip(arr, 0, top) * (255.0 / top)).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


def decode(data, max_pixels=DEFAULT_MAX_PIXELS, draft=None):
    """Decode image bytes into an RGB PIL image, or raise ImageRejected.

    `draft` (w, h) lets a JPEG decode smaller, but never below that size (see _open).
    """
    return _to_rgb(_open(data, max_pixels, draft))


def intake(data, max_pixels=DEFAULT_MAX_PIXELS):
    """Decode image bytes and decide what to store, or raise ImageRejected."""
    im = _open(data, max_pixels)
    fmt = im.format
    normalised = _needs_normalising(im)
    rgb = _to_rgb(im)
    if not normalised:
        return Intake(rgb, fmt, data, FORMATS[fmt], False)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return Intake(rgb, fmt, buf.getvalue(), "png", True)
