"""The cleaner's figures: scoring throughput, the duplicate search, page latency, and quality.

    .venv/bin/python bench/clean.py throughput [--arch resnet34] [--size 224] [--images 128]
    .venv/bin/python bench/clean.py duplicates [--n 20000] [--dim 512]
    .venv/bin/python bench/clean.py pages [--n 20000]
    .venv/bin/python bench/clean.py quality [--per-class 60] [--flip 0.1] [--epochs 2] [--cv 0]
    .venv/bin/python bench/clean.py loop [--images 1200] [--test 400] [--size 32] [--epochs 12]
                                         [--fine-tune 2] [--flip 0.1] [--junk 0.05]
                                         [--delete 0.05] [--relabel 0] [--rounds 1]
                                         [--cv 0] [--cv-epochs N] [--delete-later 0]

throughput: images/s of scoring at 224 px with an (untrained: speed does not depend on the
  weights) resnet34, one forward pass for probabilities and embedding (Classifier.scores, what
  scoring.py uses) against two (Classifier.probabilities then Classifier.embed), interleaved
  round by round.
duplicates: time and peak memory of the tiled search over N random 512-d embeddings (with some
  planted near-copies) against the full N×N similarity matrix, each run in a fresh process,
  interleaved; both must find the same pairs.
pages: milliseconds for one page of each cleaner list over N synthetic scored images (no images
  on disk, no model), the way a request computes it.
quality: generate pictures of 3 colour classes (with clutter), flip a share of the labels, train
  once (small resnet18 from scratch), score, and report the share of flipped images among the
  first 2×(flipped) images by loss, and among the first 2×(flipped) suspected label errors
  (validation images directly; with --cv k also the training images, from k cross-validation
  models).
loop: the loop closes (bench/clean_loop.py). `--images` digits drawn as in clean_embeddings.py,
  with a share `--flip` of labels flipped and `--junk` junk pictures added; train (resnet18 from
  scratch, lr found, fixed seed); apply the cleaner's suggestions through decisions.decide, what
  the page's POST calls: accept the suggested label of every label issue cleanlab flags, and
  delete the top `--delete` share of the outlier list (with `--relabel`: accept the
  suggestions of the top that share of the label-issue list instead of the flagged ones);
  retrain (with `--rounds R`: rescore the new model and clean again, R times, deleting the top
  `--delete-later` share of outliers after the first round; with `--cv k`: k-fold retraining,
  the Rescore page's thorough option, before each round's decisions); train the same recipe on
  the same digits without flips and junk. Accuracy of all
  three on `--test` other digits, drawn the same way and never trained on. Prints the CPU and
  load, then one JSON line: flipped, junk, the recalls in the first 2000 of each list (and in
  the first n, n: how many were injected), acc_dirty, acc_cleaned, acc_clean, the counts acted
  on. Target: acc_cleaned within 1 point of acc_clean.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

# ---- scoring throughput ------------------------------------------------------------------

def build_version(data_dir, arch, size, n_images):
    """Register an untrained learner as a model version over n generated pictures; return it."""
    from tests.pictures import jpeg, tinted
    from webapp.dataset.store import Dataset
    from webapp.model import registry, training

    rng = random.Random(0)
    ds = Dataset(data_dir)
    for i in range(n_images):
        label = "red" if i % 2 else "blue"
        picture = jpeg(tinted(label, rng, rng.choice([256, 320, 400])))
        ds.add_image(picture, label=label, write_csv=False)
    ds.write_cleaned_csv()
    ds.close()
    learn = training.build_learner(data_dir, training.TrainOptions(arch=arch, size=size, bs=16),
                                   pretrained=False)
    vdir = registry.new_version_dir(data_dir)
    learn.export(vdir / registry.EXPORT)
    return registry.record_version(data_dir, vdir, {"arch": arch, "size": size}, "bench", arch,
                                   size)


def throughput(args):
    import torch

    from webapp.cleaning import scoring
    from webapp.model import registry
    from webapp.model.classifier import Classifier

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        version = build_version(tmp, args.arch, args.size, args.images)
        clf = Classifier(registry.load_learner_verified(tmp, version))
        rows = scoring.labeled_images(tmp)

        def two_passes(pics):
            return clf.probabilities(pics), clf.embed(pics)

        ways = {"one pass (Classifier.scores)": clf.scores,
                "two passes (probabilities + embed)": two_passes}
        seconds = {w: [] for w in ways}
        scoring.score_version(tmp, version, batch_size=args.batch)  # warm up, and the real path
        for _ in range(args.rounds):
            for name, fn in ways.items():
                started = time.perf_counter()
                for s in range(0, len(rows), args.batch):
                    pics, _, _ = scoring.load_pictures(tmp, rows[s:s + args.batch])
                    fn(pics)
                seconds[name].append(time.perf_counter() - started)
        started = time.perf_counter()
        meta = scoring.score_version(tmp, version, batch_size=args.batch)
        whole = time.perf_counter() - started
    print(f"scoring throughput: {args.arch} at {args.size} px, {args.images} images, "
          f"batch {args.batch}, {args.threads} torch threads, "
          f"{args.rounds} interleaved rounds (median)")
    rates = {}
    for name, secs in seconds.items():
        rates[name] = args.images / statistics.median(secs)
        print(f"  {name:36s} {rates[name]:7.1f} images/s")
    one, two = rates.values()
    print(f"  ratio one pass / two passes: {one / two:.2f}x")
    print(f"  score_version end to end (load learner, decode, score, save, pair search): "
          f"{meta['images'] / whole:.1f} images/s ({whole:.1f} s)")


# ---- duplicate search ----------------------------------------------------------------------

def embeddings(n, dim, seed=0):
    """Return n random float16 embeddings, 1% of them near-copies of others."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    copies = rng.choice(n, size=(n // 100, 2), replace=False)
    x[copies[:, 1]] = x[copies[:, 0]] + rng.normal(scale=0.1, size=(len(copies), dim))
    return x.astype(np.float16)


def rss_mb():
    """Return this process's resident memory in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def search_child(way, n, dim, threshold):
    """Run one search in this (fresh) process; print seconds, peak memory growth and pairs."""
    import torch

    from webapp.cleaning import near_duplicates

    torch.set_num_threads(2)

    def search(x):
        if way == "tiled":
            p = near_duplicates.similar_pairs(x, threshold)
            return set(zip(p.first.tolist(), p.second.tolist(), strict=True))
        t = torch.nn.functional.normalize(torch.as_tensor(x.astype(np.float32)), dim=1)
        sims = (t @ t.T).triu_(diagonal=1)
        i, j = torch.nonzero(sims >= threshold, as_tuple=True)
        return set(zip(i.tolist(), j.tolist(), strict=True))

    search(embeddings(300, dim, seed=1))  # torch's first-use set-up is not the search's memory
    x = embeddings(n, dim)
    base = rss_mb()
    peak = [base]
    stop = threading.Event()

    def sample():  # the process's resident memory every 2 ms: its peak above the start
        while not stop.wait(0.002):
            peak[0] = max(peak[0], rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    found = search(x)
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    print(json.dumps({"seconds": seconds, "peak_mb": max(peak[0], rss_mb()) - base,
                      "pairs": len(found), "digest": hash(frozenset(found))}))


def duplicates(args):
    results = {"tiled": [], "full": []}
    for _ in range(args.rounds):
        for way in results:
            out = subprocess.run([sys.executable, __file__, "_search", way, str(args.n),
                                  str(args.dim), str(args.threshold)],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONHASHSEED": "0"})
            results[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"near-duplicate search: {args.n} random {args.dim}-d embeddings, "
          f"{args.n // 100} planted near-copies, threshold {args.threshold}, 2 torch threads, "
          f"{args.rounds} interleaved rounds (fresh process each; median)")
    med = {}
    for way, runs in results.items():
        med[way] = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "peak_mb")}
        each = ", ".join(f"{r['peak_mb']:.0f}" for r in runs)
        print(f"  {way:6s} {med[way]['seconds']:6.2f} s  "
              f"peak memory +{med[way]['peak_mb']:7.0f} MB (each run: {each})  "
              f"pairs {runs[0]['pairs']}")
    same = len({r["digest"] for runs in results.values() for r in runs}) == 1
    print(f"  same pairs found: {'yes' if same else 'NO'}")
    print(f"  tiled / full: time {med['tiled']['seconds'] / med['full']['seconds']:.2f}x, "
          f"peak memory {med['tiled']['peak_mb'] / med['full']['peak_mb']:.3f}x "
          f"(an N×N float32 matrix is {args.n * args.n * 4 / 2**20:.0f} MB)")


# ---- page latency --------------------------------------------------------------------------

def fill_synthetic(data_dir, n, classes=("cat", "dog", "fox", "owl"), seed=0, embeddings_of=None):
    """Insert n image rows (no files) and made-up scores with pairs; return the version.

    `embeddings_of(labels)` makes the embeddings from the class indices (default: random ones).
    """
    from tests.cleaning_data import fake_cv_scores, fake_scores
    from webapp.core import db
    from webapp.dataset import store

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(classes), n)
    with db.session(data_dir) as conn, db.transaction(conn):
        for c in classes:
            conn.execute("INSERT INTO classes(name, created) VALUES (?, ?)", (c, store.now()))
        conn.executemany(
            "INSERT INTO images(id, sha256, path, width, height, format, label, is_valid, source,"
            " added) VALUES (?, ?, ?, 1, 1, 'PNG', ?, ?, 'bench', ?)",
            [(i + 1, f"{i:064x}", f"images/{i:064x}.png", classes[labels[i]],
              int(rng.random() < 0.2), store.now()) for i in range(n)])
    logits = rng.normal(size=(n, len(classes))) + 3 * np.eye(len(classes))[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = np.arange(1, n + 1)
    emb = embeddings_of(labels) if embeddings_of else embeddings(n, 512)
    version = fake_scores(data_dir, ids, classes, probs, embeddings=emb)
    fake_cv_scores(data_dir, ids, classes, probs)
    return version


def pages(args):
    from webapp.cleaning import lists as cleaning
    from webapp.dataset.store import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        version = fill_synthetic(tmp, args.n)
        setup = time.perf_counter() - started
        ds = Dataset(tmp)
        lists = {
            "top losses, all classes": lambda c: c.top_losses(offset=0, limit=48),
            "top losses, one class, valid":
                lambda c: c.top_losses(label="dog", split="valid", limit=48),
            "top losses, page 200": lambda c: c.top_losses(offset=48 * 199, limit=48),
            "near-duplicates >= 0.95": lambda c: c.duplicates(0.95, 0, 20),
            "suspected label errors": lambda c: c.label_issues(0, 36),
        }
        times = {k: [] for k in lists}
        for _ in range(args.rounds):
            for name, fn in lists.items():
                t = time.perf_counter()
                fn(cleaning.Cleaner(ds, version))  # a request builds its Cleaner anew
                times[name].append(time.perf_counter() - t)
        ds.close()
    print(f"cleaner pages over {args.n} scored images (4 classes; setup incl. pair search "
          f"{setup:.1f} s); {args.rounds} interleaved rounds, median (first round incl. "
          "cleanlab's ranking, then cached)")
    for name, secs in times.items():
        print(f"  {name:32s} {1000 * statistics.median(secs):7.1f} ms  "
              f"(first {1000 * secs[0]:7.1f} ms)")


# ---- quality on generated data -------------------------------------------------------------

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200)}


def colour_picture(label, rng, size=32):
    """Return the JPEG bytes of a picture dominated by the class's colour, with random clutter."""
    from PIL import Image, ImageDraw

    from tests.pictures import jpeg

    jitter = lambda c: max(0, min(255, c + rng.randint(-50, 50)))  # noqa: E731
    im = Image.new("RGB", (size, size), tuple(jitter(c) for c in COLOURS[label]))
    d = ImageDraw.Draw(im)
    for _ in range(4):
        x, y = rng.randint(0, size - 8), rng.randint(0, size - 8)
        d.rectangle([x, y, x + rng.randint(3, 10), y + rng.randint(3, 10)],
                    fill=tuple(rng.randint(0, 255) for _ in range(3)))
    return jpeg(im)


def quality(args):
    from webapp.cleaning import crossval, lists as cleaning, scoring
    from webapp.dataset.store import Dataset
    from webapp.model import training

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ds = Dataset(tmp)
        kinds = list(COLOURS)
        truth = {}
        for i in range(args.per_class * len(kinds)):
            kind = kinds[i % len(kinds)]
            got = ds.add_image(colour_picture(kind, rng), label=kind, write_csv=False)
            truth[got.image_id] = kind
        ids = sorted(truth)
        flipped = set(rng.sample(ids, round(args.flip * len(ids))))
        for i in flipped:
            ds.change("relabel", image_id=i, label=rng.choice([k for k in kinds if k != truth[i]]))
        ds.write_cleaned_csv()
        opts = training.TrainOptions(arch="resnet18", size=32, epochs=args.epochs,
                                     fine_tune_epochs=2, bs=8, lr=1e-2, pretrained=False,
                                     lr_find_iters=30)
        started = time.perf_counter()
        version, metrics = training.train(tmp, opts, log=lambda *a: None)
        train_s = time.perf_counter() - started
        scoring.score_version(tmp, version)
        if args.cv:
            cv = crossval.cross_validate(tmp, version, args.cv)
        c = cleaning.Cleaner(ds, version)
        k = 2 * len(flipped)
        by_loss = {i["image_id"] for i in c.top_losses(limit=k).items}
        issues = {i["image_id"] for i in c.label_issues(limit=k).items}
        judged = c.label_issues(limit=1).total
        flipped_judged = flipped & set(c.ids[c.out_of_sample()[0]].tolist())
        ds.close()
    print(f"quality: {len(ids)} generated pictures of {len(kinds)} colour classes, "
          f"{len(flipped)} labels flipped ({args.flip:.0%}); resnet18 at 32 px from scratch, "
          f"{args.epochs}+2 epochs, trained once in {train_s:.0f} s; "
          f"valid error rate {metrics['error_rate']:.3f}")
    print(f"  first {k} images by loss (train and valid): {len(by_loss & flipped)} of "
          f"{len(flipped)} flipped = {len(by_loss & flipped) / len(flipped):.0%}")
    cov = f"{judged} out-of-sample images" + (f", incl. {args.cv}-fold CV ({cv['seconds']:.0f} s)"
                                             if args.cv else ": validation only")
    print(f"  first {k} suspected label errors ({cov}): {len(issues & flipped)} of the "
          f"{len(flipped_judged)} flipped among them = "
          f"{len(issues & flipped) / max(1, len(flipped_judged)):.0%}")


def loop(args):
    from clean_loop import loop as run

    print(f"cpu: {machine.cpu_model()}; load before: {machine.loadavg()}", flush=True)
    got = run(args)
    print(f"load after: {got['load_after']}")
    print(json.dumps(got))


def main():
    if sys.argv[1:2] == ["_search"]:
        way, n, dim, threshold = sys.argv[2:6]
        return search_child(way, int(n), int(dim), float(threshold))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--arch", default="resnet34")
    t.add_argument("--size", type=int, default=224)
    t.add_argument("--images", type=int, default=128)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--rounds", type=int, default=3)
    d = sub.add_parser("duplicates")
    d.add_argument("--n", type=int, default=20000)
    d.add_argument("--dim", type=int, default=512)
    d.add_argument("--threshold", type=float, default=0.9)
    d.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("pages")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    q = sub.add_parser("quality")
    q.add_argument("--per-class", type=int, default=60)
    q.add_argument("--flip", type=float, default=0.1)
    q.add_argument("--epochs", type=int, default=2)
    q.add_argument("--cv", type=int, default=0)
    q.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("loop")
    m.add_argument("--images", type=int, default=1200)
    m.add_argument("--test", type=int, default=400)
    m.add_argument("--size", type=int, default=32)
    m.add_argument("--epochs", type=int, default=12)
    m.add_argument("--fine-tune", type=int, default=2)
    m.add_argument("--flip", type=float, default=0.1)
    m.add_argument("--junk", type=float, default=0.05)
    m.add_argument("--delete", type=float, default=0.05)
    m.add_argument("--relabel", type=float, default=0,
                   help="relabel the top share of label issues (0: the ones cleanlab flags)")
    m.add_argument("--cv", type=int, default=0,
                   help="also cross-validate with k fold models before acting (Rescore's option)")
    m.add_argument("--cv-epochs", type=int, default=None,
                   help="epochs per fold model, in one cycle (default: the version's recipe)")
    m.add_argument("--rounds", type=int, default=1,
                   help="clean and retrain this many times (each round rescores the new model)")
    m.add_argument("--delete-later", type=float, default=0,
                   help="the share of outliers deleted in rounds after the first")
    m.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    what = {"throughput": throughput, "duplicates": duplicates, "pages": pages, "quality": quality,
            "loop": loop}
    what[args.what](args)


if __name__ == "__main__":
    main()
