"""Calibrate the near-duplicate list: plant true near-copies in a real set and count what it finds.

    .venv/bin/python bench/near_duplicates.py [--set digits|photos|colours] [--per-class 60]
        [--copies 0.1] [--size 64] [--epochs 3] [--seed 1] [--keep DIR]

builds a set of real pictures: scikit-learn's bundled handwritten digits (8×8, 10 classes)
  upscaled to 64 px PNGs; or (`--set photos`) 64 px tiles, 32 px apart, of scikit-learn's two
  sample photographs (a temple and a flower: 2 classes); or generated colour pictures with
  clutter (`--set colours`, 3 classes);
plants near-copies of a share of them under the same label, each made by one to three of: JPEG
  re-encoding at quality 30-60, resizing to 50-80 %, cropping 2-5 % of the width and of the
  height (split at random between the two sides), brightness ±10 %;
trains resnet18 from scratch at 64 px with the app's recipe (training.train) and scores every
  image as the app does (scoring.score_version: embeddings and perceptual hashes);
sweeps each way of pairing over thresholds: the share of planted copies paired with their
  original (recall) and the number of other pairs flagged. The ways: cosine of the embeddings
  (the list before perceptual hashes), centred embeddings (the set's mean taken off), PCA-whitened
  embeddings, the perceptual hashes (the list now), and the mean of hash and centred cosine;
then reads the cleaner's own Near-duplicates list at its default threshold, times the hash
search over 20 000 images, and ends with one JSON line.
`--keep DIR` keeps the trained set in DIR and reuses it on the next run (no retraining).
"""
import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, loadavg  # noqa: E402

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EDITS = ("jpeg", "resize", "crop", "brightness")
BASELINE = 0.95  # the list's default before perceptual hashes: cosine of the embeddings


# ---- the set and its planted copies --------------------------------------------------------

def digit_pictures(per_class, size, rng):
    """Return [(label, PIL image)]: `per_class` digits of each class, dark ink on white."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for c, name in enumerate(DIGITS):
        for i in rng.sample(np.flatnonzero(digits.target == c).tolist(), per_class):
            ink = (255 - digits.images[i] * 255 / 16).astype(np.uint8)
            out.append((name, Image.fromarray(ink).resize((size, size), Image.BICUBIC)
                        .convert("RGB")))
    return out


def photo_pictures(per_class, size, rng, step=32):
    """Return [(label, PIL image)]: size-px tiles, `step` px apart, of scikit-learn's two sample
    photographs, `per_class` of each (at most 228 at 64 px)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    out = []
    for path, pixels in zip(photos.filenames, photos.images, strict=True):
        h, w, _ = pixels.shape
        tiles = [(y, x) for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step)]
        for y, x in rng.sample(tiles, min(per_class, len(tiles))):
            out.append((Path(path).stem, Image.fromarray(pixels[y:y + size, x:x + size])))
    return out


def colour_pictures(per_class, size, rng):
    """Return [(label, PIL image)]: generated colour pictures with clutter (bench/clean.py's)."""
    from PIL import Image

    from bench.clean import COLOURS, colour_picture

    return [(label, Image.open(io.BytesIO(colour_picture(label, rng, size))).convert("RGB"))
            for _ in range(per_class) for label in COLOURS]


SETS = {"digits": digit_pictures, "photos": photo_pictures, "colours": colour_pictures}


def near_copy(im, rng):
    """Return (encoded bytes, edits) of a near-copy of a picture: one to three of EDITS."""
    from PIL import ImageEnhance

    edits = sorted(rng.sample(EDITS, rng.randint(1, 3)), key=EDITS.index)
    if "crop" in edits:
        w, h = im.size
        cw, ch = rng.uniform(0.02, 0.05) * w, rng.uniform(0.02, 0.05) * h
        left, top = rng.random(), rng.random()
        im = im.crop((round(left * cw), round(top * ch),
                      w - round((1 - left) * cw), h - round((1 - top) * ch)))
    if "resize" in edits:
        scale = rng.uniform(0.5, 0.8)
        im = im.resize((max(8, round(im.width * scale)), max(8, round(im.height * scale))))
    if "brightness" in edits:
        im = ImageEnhance.Brightness(im).enhance(rng.choice([0.9, 1.1]))
    if "jpeg" in edits:
        return encode(im, "JPEG", quality=rng.randint(30, 60)), edits
    return encode(im, "PNG"), edits


def encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def build_set(data_dir, args):
    """Fill a dataset with the pictures and their planted copies; return the planted pairs."""
    from webapp.dataset.store import Dataset

    rng = random.Random(args.seed)
    pictures = SETS[args.set](args.per_class, args.size, rng)
    ds = Dataset(data_dir)
    originals = [(ds.add_image(encode(im, "PNG"), label=label, source="bench",
                               write_csv=False).image_id, label, im) for label, im in pictures]
    planted = []
    for image_id, label, im in rng.sample(originals, round(args.copies * len(originals))):
        data, edits = near_copy(im, rng)
        copy = ds.add_image(data, label=label, source="bench", write_csv=False).image_id
        planted.append({"original": image_id, "copy": copy, "edits": edits})
    ds.write_cleaned_csv()
    ds.close()
    return planted


def trained_set(data_dir, args):
    """Return {version, planted, seconds, error_rate} of the set in data_dir, built and trained
    unless a run with --keep left it there."""
    from webapp.cleaning import scoring
    from webapp.model import training

    done = data_dir / "bench-near-duplicates.json"
    if done.exists():
        return json.loads(done.read_text())
    planted = build_set(data_dir, args)
    opts = training.TrainOptions(arch="resnet18", size=args.size, epochs=args.epochs,
                                 fine_tune_epochs=1, bs=32, lr=1e-2, pretrained=False,
                                 lr_find_iters=30)
    started = time.perf_counter()
    version, metrics = training.train(data_dir, opts, log=lambda *a: None)
    scoring.score_version(data_dir, version)
    info = {"version": version, "planted": planted,
            "seconds": round(time.perf_counter() - started),
            "error_rate": round(float(metrics["error_rate"]), 4)}
    done.write_text(json.dumps(info))
    return info


# ---- the ways of pairing -------------------------------------------------------------------

def cosine(x):
    x = np.asarray(x, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    return x @ x.T


def whiten(x, keep=0.99):
    """Project on the principal components that hold `keep` of the variance, each scaled to 1."""
    x = np.asarray(x, np.float64) - np.mean(x, 0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), keep)) + 1]


def ways(scores):
    """Return {way: (n, n) similarity matrix} over the scored images (a few hundred: full)."""
    from webapp.cleaning.near_duplicates import HASH_BITS

    emb = scores.embeddings.astype(np.float64)
    h = scores.hashes
    phash = 1 - np.bitwise_count(h[:, None] ^ h[None, :]).astype(np.float64) / HASH_BITS
    centred = cosine(emb - emb.mean(0))
    return {"cosine": cosine(emb), "centred": centred, "whitened": cosine(whiten(emb)),
            "phash": phash, "phash+centred": (phash + centred) / 2}


def counts(sim, threshold, truth):
    """Return (planted pairs found, other pairs) among the pairs at or above threshold."""
    i, j = np.nonzero(np.triu(sim >= threshold - 1e-9, 1))
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    return len(found & truth), len(found - truth)


def operating_point(sim, truth, recall=0.95):
    """Return (threshold, recall, other pairs) at the highest threshold reaching `recall`."""
    values = np.unique(np.round(sim[tuple(np.array(sorted(truth)).T)], 6))
    for t in values[::-1]:
        hit, other = counts(sim, t, truth)
        if hit >= recall * len(truth):
            return float(t), hit / len(truth), other
    return float(values[0]), 1.0, counts(sim, values[0], truth)[1]


THRESHOLDS = {"phash": [1 - d / 64 for d in (4, 6, 8, 10, 12)],
              "phash+centred": [0.95, 0.9, 0.85, 0.8]}


def sweep(scores, truth):
    """Print each way's recall and other pairs over thresholds, and its operating point."""
    print("  way            threshold: recall / other pairs ...          | at recall >= 0.95")
    for name, sim in ways(scores).items():
        cells = [f"{t:.3f}: {h / len(truth):.2f}/{o}" for t in
                 THRESHOLDS.get(name, [0.99, 0.95, 0.9, 0.8])
                 for h, o in [counts(sim, t, truth)]]
        t, r, o = operating_point(sim, truth)
        print(f"  {name:14s} {'  '.join(cells):48s} | {t:.3f}: {r:.2f}/{o}")


# ---- the app's own list ----------------------------------------------------------------------

def listed(data_dir, version, planted, threshold=None):
    """Return (found, other, per-edit recall, threshold) of the cleaner's Near-duplicates list."""
    from webapp.cleaning import lists as cleaning
    from webapp.dataset.store import Dataset

    ds = Dataset(data_dir)
    try:
        c = cleaning.Cleaner(ds, version)
        first, second, _ = c.live_pairs(threshold)
        threshold = threshold or cleaning.near_duplicates.DEFAULT_THRESHOLD[c.pair_method]
    finally:
        ds.close()
    pairs = {tuple(sorted(p)) for p in zip(first.tolist(), second.tolist(), strict=True)}
    truth = {tuple(sorted((p["original"], p["copy"]))): p["edits"] for p in planted}
    by_edit = {e: [k in pairs for k, edits in truth.items() if e in edits] for e in EDITS}
    return (len(pairs & set(truth)), len(pairs - set(truth)),
            {e: f"{sum(v)}/{len(v)}" for e, v in by_edit.items()}, threshold)


def baseline(scores, planted):
    """Return (found, other) of the list before hashes: embeddings' cosine at BASELINE."""
    from webapp.cleaning import near_duplicates

    p = near_duplicates.similar_pairs(scores.embeddings, BASELINE)
    ids = scores.image_ids
    pairs = {tuple(sorted(x)) for x in zip(ids[p.first].tolist(), ids[p.second].tolist(),
                                           strict=True)}
    truth = {tuple(sorted((p["original"], p["copy"]))) for p in planted}
    return len(pairs & truth), len(pairs - truth)


def search_seconds(n=20000, seed=0):
    """Time the tiled hash search over n random hashes with 1 % near-copies (a few bits off)."""
    from webapp.cleaning import near_duplicates

    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n,
                                                                                 np.uint64)
    pick = rng.choice(n, (n // 100, 2), replace=False)
    h[pick[:, 1]] = h[pick[:, 0]] ^ np.uint64(0b1011)
    started = time.perf_counter()
    pairs = near_duplicates.similar_hashes(h)
    return time.perf_counter() - started, len(pairs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=tuple(SETS), default="digits")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--copies", type=float, default=0.1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="near-dup-") as tmp:
        report(Path(args.keep or tmp), args)


def report(data_dir, args):
    from webapp.cleaning import scoring

    info = trained_set(data_dir, args)
    scores = scoring.load_scores(data_dir, info["version"])
    row = {int(i): n for n, i in enumerate(scores.image_ids)}
    truth = {tuple(sorted((row[p["original"]], row[p["copy"]]))) for p in info["planted"]}
    n = len(truth)
    print(f"near-duplicates: {args.set}, {len(scores)} images incl. {n} planted near-copies; "
          f"resnet18 at {args.size} px from scratch, valid error rate {info['error_rate']:.3f}, "
          f"trained and scored in {info['seconds']} s")
    sweep(scores, truth)
    found, other, by_edit, threshold = listed(data_dir, info["version"], info["planted"])
    base_found, base_other = baseline(scores, info["planted"])
    print(f"  the list at its default ({threshold}): {found}/{n} copies, {other} other pairs; "
          f"by edit: {by_edit}")
    print(f"  before (embedding cosine >= {BASELINE}): {base_found}/{n} copies, "
          f"{base_other} other pairs")
    seconds, pairs = search_seconds()
    print(f"  hash search over 20000 images: {seconds:.2f} s, {pairs} pairs")
    print(f"  cpu: {cpu_model()}; load average {loadavg()}")
    print(json.dumps({"set": args.set, "images": len(scores), "injected": n, "method": "phash",
                      "threshold": threshold, "recall": round(found / n, 3),
                      "other_pairs": other, "baseline_method": "cosine",
                      "baseline_threshold": BASELINE, "baseline_recall": round(base_found / n, 3),
                      "baseline_other_pairs": base_other,
                      "search_20000_seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
