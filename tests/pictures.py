"""Small generated pictures for the tests: no downloads, varied content."""
import io
import random

from PIL import Image, ImageDraw

PALETTES = {"red": (200, 40, 40), "blue": (40, 60, 200)}


def jpeg(im, **kw):
    """Return the JPEG bytes of a PIL image."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def encode(im, fmt, **kw):
    """Return the bytes of a PIL image in a format."""
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def tinted(label, rng, size=32):
    """Return a picture dominated by the label's colour, with random clutter."""
    base = PALETTES[label]

    def jitter(c):
        return max(0, min(255, c + rng.randint(-40, 40)))

    im = Image.new("RGB", (size, size), tuple(jitter(c) for c in base))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x, y = rng.randint(0, size - 8), rng.randint(0, size - 8)
        d.rectangle([x, y, x + rng.randint(3, 8), y + rng.randint(3, 8)],
                    fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return im


def tinted_set(per_class=24, size=32, seed=0):
    """Yield (label, jpeg bytes) for two colour classes that a tiny model learns fast."""
    rng = random.Random(seed)
    for _ in range(per_class):
        for label in PALETTES:
            yield label, jpeg(tinted(label, rng, size))


def scene(rng, size=96):
    """Return a photo-like picture: a gradient sky behind a few random shapes."""
    im = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(im)
    top, bottom = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    for y in range(size):
        d.line([(0, y), (size, y)],
               fill=tuple(round(a + (b - a) * y / size) for a, b in zip(top, bottom, strict=True)))
    for _ in range(6):
        x, y = rng.randrange(size), rng.randrange(size)
        box = [x, y, x + rng.randint(size // 6, size // 2), y + rng.randint(size // 6, size // 2)]
        shape = d.ellipse if rng.random() < 0.5 else d.rectangle
        shape(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    return im


def near_copy(im):
    """Return the JPEG bytes of a near-copy: 1-3 px cropped a side, shrunk to 70 %, quality 40."""
    w, h = im.size
    small = im.crop((2, 1, w - 2, h - 3)).resize((round(w * 0.7), round(h * 0.7)))
    return encode(small, "JPEG", quality=40)
