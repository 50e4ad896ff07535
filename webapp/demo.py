"""The demo dataset: synthetic pictures of shapes, made here, no downloads."""
import io
import math
import random

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle")


def _colour(rng, dark):
    lo, hi = (0, 110) if dark else (145, 255)
    return tuple(rng.randint(lo, hi) for _ in range(3))


def draw_shape(shape, rng, size=96):
    """Return one RGB picture of `shape` with random colours, size, place and clutter."""
    dark_bg = rng.random() < 0.5
    im = Image.new("RGB", (size, size), _colour(rng, dark_bg))
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(0, 4)):  # clutter: thin lines, so colour alone cannot tell
        d.line([tuple(rng.randint(0, size) for _ in range(2)) for _ in range(2)],
               fill=_colour(rng, not dark_bg), width=1)
    r = rng.uniform(0.22, 0.38) * size
    cx, cy = (rng.uniform(r, size - r) for _ in range(2))
    fill = _colour(rng, not dark_bg)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        a = rng.uniform(0, math.pi / 2)
        d.polygon([(cx + r * math.cos(a + k * math.pi / 2), cy + r * math.sin(a + k * math.pi / 2))
                   for k in range(4)], fill=fill)
    elif shape == "triangle":
        a = rng.uniform(0, 2 * math.pi)
        d.polygon([(cx + r * math.cos(a + k * 2 * math.pi / 3),
                    cy + r * math.sin(a + k * 2 * math.pi / 3)) for k in range(3)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    if rng.random() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return im


def shape_images(per_class=60, size=96, seed=0, shapes=SHAPES):
    """Yield (label, jpeg bytes) for `per_class` pictures of each shape."""
    rng = random.Random(seed)
    for i in range(per_class):
        for shape in shapes:
            buf = io.BytesIO()
            draw_shape(shape, rng, size).save(buf, format="JPEG", quality=90)
            yield shape, buf.getvalue()


def add_demo_images(dataset, per_class=60, size=96, seed=0, progress=None):
    """Add the demo pictures to the dataset; return the import outcomes."""
    results = []
    total = per_class * len(SHAPES)
    for i, (label, data) in enumerate(shape_images(per_class, size, seed)):
        results.append(dataset.add_image(data, label=label, source="demo",
                                         name=f"demo-{label}-{i}.jpg", actor="demo"))
        if progress:
            progress(i + 1, total)
    return results
