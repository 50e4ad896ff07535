"""Issue 15's targets: label issues on every image and outliers, from the stored embeddings.

    .venv/bin/python bench/clean_embeddings.py [--copies 2] [--flip 0.1] [--junk 0.05]
                                               [--epochs 3] [--fine-tune 2] [--size 64]

scikit-learn's handwritten digits (1797 8×8 pictures, shipped with the library), each drawn
`--copies` times at 64 px with random ink, background and position, into ten class folders.
A share `--flip` of the digits get a wrong label; a share `--junk` of pictures of another kind
(noise, stripes, checks, shapes, gradients) is mixed into the folders under random labels. One
resnet18 is trained from scratch with the lesson's recipe, and scoring runs as after training:
no k-fold retraining. Printed: the share of flipped labels among the first 2000 suspected label
errors and the first 2000 top losses, and the share of junk among the first 2000 outliers; also
among the first n and 2n (n: how many were injected), which the 2000 hide on a small dataset.
"""
import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_picture(pixels, rng, size):
    """Return a PIL picture of one 8×8 digit: random ink and background, scale and position."""
    from PIL import Image

    ink = np.array([rng.randint(150, 255) for _ in range(3)], np.float32)
    paper = np.array([rng.randint(0, 90) for _ in range(3)], np.float32)
    alpha = (pixels / 16.0)[..., None]
    digit = Image.fromarray((alpha * ink + (1 - alpha) * paper).astype(np.uint8), "RGB")
    side = rng.randint(size * 5 // 8, size * 7 // 8)
    canvas = Image.new("RGB", (size, size), tuple(int(c) for c in paper))
    canvas.paste(digit.resize((side, side), Image.BILINEAR),
                 (rng.randint(0, size - side), rng.randint(0, size - side)))
    return canvas


def junk_picture(rng, size):
    """Return a PIL picture of another kind: noise, stripes, checks, shapes or a gradient."""
    from PIL import Image, ImageDraw

    colour = lambda: tuple(rng.randint(0, 255) for _ in range(3))  # noqa: E731
    kind = rng.choice(["noise", "stripes", "checks", "shapes", "gradient"])
    if kind == "noise":
        return Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    im = Image.new("RGB", (size, size), colour())
    d = ImageDraw.Draw(im)
    if kind == "stripes":
        step = rng.randint(3, 10)
        for x in range(-size, 2 * size, step * 2):
            d.polygon([(x, 0), (x + step, 0), (x + step + size // 2, size), (x + size // 2, size)],
                      fill=colour())
    elif kind == "checks":
        step = rng.randint(4, 12)
        for x in range(0, size, step):
            for y in range(0, size, step):
                if (x // step + y // step) % 2:
                    d.rectangle([x, y, x + step - 1, y + step - 1], fill=colour())
    elif kind == "shapes":
        for _ in range(rng.randint(3, 8)):
            x, y = rng.randint(0, size - 10), rng.randint(0, size - 10)
            box = [x, y, x + rng.randint(6, 30), y + rng.randint(6, 30)]
            (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=colour())
    else:
        a, b = np.array(colour(), np.float32), np.array(colour(), np.float32)
        t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        im = Image.fromarray(np.broadcast_to(a + t * (b - a), (size, size, 3)).astype(np.uint8))
    return im


def build(data_dir, args, rng):
    """Fill a dataset; return (flipped ids, junk ids)."""
    from sklearn.datasets import load_digits

    from tests.pictures import encode
    from webapp.dataset.store import Dataset

    digits = load_digits()
    ds = Dataset(data_dir)
    truth, junk = {}, set()
    for _ in range(args.copies):
        for pixels, target in zip(digits.images, digits.target, strict=True):
            got = ds.add_image(encode(digit_picture(pixels, rng, args.size), "PNG"),
                               label=CLASSES[target], write_csv=False)
            truth[got.image_id] = CLASSES[target]
    for _ in range(round(args.junk * len(truth))):
        got = ds.add_image(encode(junk_picture(rng, args.size), "PNG"),
                           label=rng.choice(CLASSES), write_csv=False)
        junk.add(got.image_id)
    flipped = set(rng.sample(sorted(truth), round(args.flip * len(truth))))
    for i in flipped:
        ds.change("relabel", image_id=i, label=rng.choice([c for c in CLASSES if c != truth[i]]))
    ds.write_cleaned_csv()
    ds.close()
    return flipped, junk


def recalls(ranked, wanted, cuts):
    """Return the share of `wanted` among the first `cut` of `ranked`, for each cut."""
    return {cut: len(set(ranked[:cut]) & wanted) / max(1, len(wanted)) for cut in cuts}


def show(name, ranked, wanted, n_listed):
    n = len(wanted)
    got = recalls(ranked, wanted, [2000, n, 2 * n])
    print(f"  {name} ({n_listed} listed): first 2000 {got[2000]:.1%} · first {n} {got[n]:.1%}"
          f" · first {2 * n} {got[2 * n]:.1%}")


def alternatives(data_dir, version, cleaner, flipped, junk, save=None):
    """Print the variants the defaults were chosen against."""
    from cleanlab.outlier import OutOfDistribution

    from webapp.cleaning import embedding_models, lists, scoring

    scores = scoring.load_scores(data_dir, version)
    emb = scores.embeddings[[scores.index()[int(i)] for i in cleaner.ids]]
    rows, probs, _ = cleaner.out_of_sample()
    if save:
        np.savez(save, ids=cleaner.ids, embeddings=emb, probs=cleaner.probs, oof=probs,
                 labels=cleaner.label_idx, valid=cleaner.valid,
                 flipped=np.array(sorted(flipped)), junk=np.array(sorted(junk)))
    valid = cleaner.valid[rows]
    mixed = np.where(valid[:, None], cleaner.probs[rows], probs)  # valid: the network's own
    labels = cleaner.label_idx[rows]
    for name, p in [("embedding CV for every image, both splits ranked together", probs),
                    ("network's own for valid, embedding CV for train, within split", mixed)]:
        if "together" in name:
            quality, flagged = lists.rank_label_issues(labels, p)
            order = np.lexsort((quality, ~flagged))
        else:
            quality, rank, flagged = lists.rank_within_groups(labels, p, valid)
            order = np.lexsort((quality, rank, ~flagged))
        show(f"label issues, {name}", cleaner.ids[rows][order].tolist(), flipped, len(order))
    for k in (10, 30):
        typical = OutOfDistribution({"k": k}).fit_score(
            features=embedding_models.normalised(emb), verbose=False)
        show(f"outliers, cleanlab OutOfDistribution on embeddings (k-NN), k={k}",
             cleaner.ids[np.argsort(typical, kind="stable")].tolist(), junk, len(typical))
    typical = OutOfDistribution().fit_score(pred_probs=cleaner.probs, labels=cleaner.label_idx,
                                            verbose=False)
    show("outliers, cleanlab OutOfDistribution on the network's probabilities",
         cleaner.ids[np.argsort(typical, kind="stable")].tolist(), junk, len(typical))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--junk", type=float, default=0.05)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fine-tune", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="also save the embeddings and probabilities (.npz)")
    args = parser.parse_args()

    from webapp.cleaning import lists, scoring
    from webapp.dataset.store import Dataset
    from webapp.model import training

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        flipped, junk = build(tmp, args, rng)
        opts = training.TrainOptions(arch="resnet18", size=args.size, epochs=args.epochs,
                                     fine_tune_epochs=args.fine_tune, bs=32, lr=1e-2,
                                     pretrained=False, lr_find_iters=30)
        started = time.perf_counter()
        version, metrics = training.train(tmp, opts, log=lambda *a: None)
        train_s = time.perf_counter() - started
        meta = scoring.score_version(tmp, version)
        checks = scoring.load_embedding_checks(tmp, version)[0]
        ds = Dataset(tmp)
        c = lists.Cleaner(ds, version)
        print(f"{len(c.ids)} images: {len(c.ids) - len(junk)} digits ({args.copies} drawings "
              f"each), {len(flipped)} labels flipped ({args.flip:.0%}), {len(junk)} junk "
              f"pictures ({args.junk:.0%}); resnet18 at {args.size} px from scratch, "
              f"{args.epochs}+{args.fine_tune} epochs in {train_s:.0f} s, valid error rate "
              f"{metrics['error_rate']:.3f}; scoring {meta['seconds']:.0f} s, then the "
              f"embedding models {checks['seconds']:.1f} s ({checks['folds']} folds, "
              f"{checks['covered']} images covered)")
        n = len(c.ids)
        issues = c.label_issues(limit=n)
        print(f"  label issues ranked by: {issues.sources}")
        show("suspected label errors", [i["image_id"] for i in issues.items], flipped, n)
        show("top losses", [i["image_id"] for i in c.top_losses(limit=n).items], flipped, n)
        show("outliers", [i["image_id"] for i in c.outliers(limit=n).items], junk, n)
        print("alternatives:")
        alternatives(tmp, version, c, flipped, junk, args.save)
        ds.close()


if __name__ == "__main__":
    main()
