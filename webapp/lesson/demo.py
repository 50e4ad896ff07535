"""The demo dataset: synthetic landscapes at three times of day, made here, no downloads."""
import io
import random

from PIL import Image, ImageDraw, ImageFilter

SCENES = ("day", "night", "sunset")
SKIES = {  # (top colour, horizon colour) ranges per scene
    "day": ((60, 130, 230), (170, 210, 250)),
    "night": ((5, 10, 40), (30, 40, 90)),
    "sunset": ((120, 60, 140), (250, 150, 60)),
}


def _jitter(rng, colour, amount=30):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def draw_scene(scene, rng, size=96):
    """Return one RGB picture of a landscape at `scene` time, with random sky, sun and hills."""
    top, horizon = (_jitter(rng, c) for c in SKIES[scene])
    im = Image.new("RGB", (size, size))
    d = ImageDraw.Draw(im)
    for y in range(size):  # sky gradient
        t = y / (size - 1)
        fill = tuple(int(a + (b - a) * t) for a, b in zip(top, horizon, strict=True))
        d.line([(0, y), (size, y)], fill=fill)
    r = rng.uniform(0.06, 0.14) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size * 0.5)
    light = {"day": (255, 245, 200), "night": (235, 235, 220), "sunset": (255, 120, 40)}[scene]
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter(rng, light, 15))
    if scene == "night":
        for _ in range(rng.randint(5, 25)):
            x, y = rng.randint(0, size - 1), rng.randint(0, size // 2)
            d.point((x, y), fill=(255, 255, 255))
    ground = {"day": (60, 140, 60), "night": (15, 30, 20), "sunset": (70, 50, 50)}[scene]
    base = rng.uniform(0.6, 0.8) * size
    points = [(0, size)] + [(x, base + rng.uniform(-0.12, 0.08) * size)
                            for x in range(0, size + 16, 16)] + [(size, size)]
    d.polygon(points, fill=_jitter(rng, ground, 20))
    if rng.random() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return im


def scene_images(per_class=60, size=96, seed=0, scenes=SCENES):
    """Yield (label, jpeg bytes) for `per_class` pictures of each scene."""
    rng = random.Random(seed)
    for _ in range(per_class):
        for scene in scenes:
            buf = io.BytesIO()
            draw_scene(scene, rng, size).save(buf, format="JPEG", quality=90)
            yield scene, buf.getvalue()


def add_demo_images(dataset, per_class=60, size=96, seed=0, progress=None):
    """Add the demo pictures to the dataset; return the import outcomes."""
    results = []
    total = per_class * len(SCENES)
    for i, (label, data) in enumerate(scene_images(per_class, size, seed)):
        results.append(dataset.add_image(data, label=label, source="demo",
                                         name=f"demo-{label}-{i}.jpg", actor="demo",
                                         write_csv=False))
        if progress:
            progress(i + 1, total)
    dataset.write_cleaned_csv()
    return results
