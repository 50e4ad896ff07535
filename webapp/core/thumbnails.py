"""Browser-friendly copies of stored images, made once and cached under thumbs/."""
import io
from pathlib import Path

from PIL import Image

from webapp.core import files

SIZES = (128, 256, 512, 1024)  # longest side, in pixels
BROWSER_FORMATS = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp",
                   "gif": "image/gif", "bmp": "image/bmp"}


def thumbnail_path(data_dir, sha256, size):
    """Return the cached thumbnail's path (it may not exist yet)."""
    return Path(data_dir) / "thumbs" / sha256[:2] / f"{sha256}-{size}.jpg"


def thumbnail(data_dir, source, sha256, size):
    """Return the path of a JPEG no larger than size×size, making it on first use."""
    if size not in SIZES:
        raise ValueError(f"thumbnail sizes are {', '.join(map(str, SIZES))}")
    path = thumbnail_path(data_dir, sha256, size)
    if path.exists():
        return path
    with Image.open(source) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, buf.getvalue())
    return path
