"""Issue 15's training targets: the recipe from scratch, and lr_find's share of a run.

    .venv/bin/python bench/lr_find.py [--size 64] [--seeds 42,1,2] [--small]

Datasets: scikit-learn's handwritten digits (shipped with the library) drawn at 64 px with random
ink, background, scale and position (bench/clean_embeddings.py's drawing), one picture per digit,
into class folders: "digits3" (0, 1, 2: 537 pictures) and "digits5" (0 to 4: 901 pictures);
with --small also "digits3-small" (67 per class: 201 pictures; no 100-iteration comparison).

On each, as a user would: the train job with the default settings offline (lr auto, 4+2 epochs,
batch size 64, lr_find's budget), resnet18 at --size px with no ImageNet weights, once per seed
(digits3: every seed; the others: the first two). lr_find's share is its seconds over the whole
job's (metrics.json's phase_seconds: setup, lr_find, training, export with the serving bundle,
scoring), taken from the seed's quickest job: the machine is shared, and the least disturbed run
is the one that measures the recipe rather than the neighbours. Then fastai's own 100-iteration
lr_find on the first seed's learner (same starting weights) and the ratio between its suggestions
and the bounded run's: the valley, and the rate the from-scratch rule picks from each. On digits3
also plain fastai as its users write it, per seed (ImageDataLoaders.from_csv on cleaned.csv,
Resize, no augmentation, batch size 64, vision_learner, fit_one_cycle(6, 3e-3)).

Prints the CPU, the load average before and after, one line per dataset, and as its LAST line
ONE JSON object with the figures. About seven minutes on a quiet 2-core machine; the seconds of a
busy one (load average above 1.5) are flagged as noisy.
"""
import argparse
import contextlib
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clean_embeddings import CLASSES, digit_picture  # noqa: E402  (beside this script)
from machine import cpu_model, loadavg  # noqa: E402

BUSY = 1.5
PLAIN_LR = 3e-3


def build(data_dir, n_classes, size, per_class=None, seed=0):
    """Fill a dataset with digit pictures of the first n classes; return how many."""
    from sklearn.datasets import load_digits

    from tests.pictures import encode
    from webapp.dataset.store import Dataset

    rng = random.Random(seed)
    digits = load_digits(n_class=n_classes)
    ds = Dataset(data_dir)
    taken = {}
    for pixels, target in zip(digits.images, digits.target, strict=True):
        if per_class and taken.get(target, 0) >= per_class:
            continue
        taken[target] = taken.get(target, 0) + 1
        ds.add_image(encode(digit_picture(pixels, rng, size), "PNG"), label=CLASSES[target],
                     write_csv=False)
    ds.write_cleaned_csv()
    ds.close()
    return sum(taken.values())


def train_job(data_dir, size, seed):
    """Run the train job with the default settings, offline, from scratch; return its metrics."""
    from webapp.jobs import runner as jobs
    from webapp.model import registry

    params = {"arch": "resnet18", "size": size, "pretrained": False, "download_weights": False,
              "seed": seed}
    with contextlib.redirect_stdout(io.StringIO()) as said:  # its log and fastai's epoch rows
        job = jobs.run_here(data_dir, "train", params)
    if job["status"] != "succeeded":
        raise SystemExit(f"the train job {job['status']}: {job['message']}\n{said.getvalue()}")
    return registry.version_record(data_dir, job["result"]["version"])["metrics"]


def full_lr_find(data_dir, size, seed):
    """Return fastai's own 100-iteration lr_find suggestions on the learner the job started with."""
    from fastai.callback.schedule import minimum, steep, valley

    from webapp.model import recipe

    opts = recipe.TrainOptions(arch="resnet18", size=size, pretrained=False, seed=seed)
    learn = recipe.build_learner(data_dir, opts, pretrained=False)
    learn.path = Path(data_dir) / "tmp"
    started = time.monotonic()
    found = learn.lr_find(num_it=100, show_plot=False, suggest_funcs=(minimum, steep, valley))
    return found._asdict(), time.monotonic() - started


def plain_fastai(data_dir, size, lr, seed):
    """Return plain fastai's error rate: from_csv, Resize, vision_learner, fit_one_cycle(6, lr)."""
    import torchvision.models as tvm
    from fastai.torch_core import set_seed
    from fastai.vision.all import ImageDataLoaders, Resize, error_rate, vision_learner

    set_seed(seed, reproducible=True)
    dls = ImageDataLoaders.from_csv(data_dir, "cleaned.csv", valid_col="is_valid",
                                    item_tfms=Resize(size), num_workers=0, device="cpu")
    learn = vision_learner(dls, tvm.resnet18, metrics=error_rate, pretrained=False)
    learn.path = Path(data_dir) / "tmp"
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(6, lr)
    return float(learn.validate()[1])


def ratio(a, b):
    """Return how many times the larger of two rates is the smaller."""
    return max(a, b) / min(a, b)


def measure(name, n_classes, args, per_class=None, compare=True):
    """Train one dataset as the job does; compare its lr_find with fastai's 100 iterations."""
    from webapp.model import lr_rules, recipe

    seeds = args.seeds if name == "digits3" else args.seeds[:2]
    with tempfile.TemporaryDirectory() as tmp:
        images = build(tmp, n_classes, args.size, per_class)
        runs = {seed: train_job(tmp, args.size, seed) for seed in seeds}
        quickest = min(runs.values(), key=lambda m: sum(m["phase_seconds"].values()))
        phases = quickest["phase_seconds"]
        first = runs[seeds[0]]
        curve = first["lr_find"][recipe.SCRATCH]
        n_train = sum(c["train"] for c in first["provenance"]["counts"].values())
        bs = recipe.batch_size(recipe.TrainOptions().bs, n_train, pretrained=False)
        out = {"images": images, "seeds": seeds, "bs": bs, "lr": first["lr"],
               "error_auto": [round(m["error_rate"], 4) for m in runs.values()],
               "lr_find_iters": curve["num_it"], "lr_find_ran": curve["ran"],
               "lr_find_share": round(phases["lr_find"] / sum(phases.values()), 3),
               "lr_find_shares": [round(m["phase_seconds"]["lr_find"]
                                        / sum(m["phase_seconds"].values()), 3)
                                  for m in runs.values()],
               "phase_seconds": phases, "suggestions": curve["suggestions"]}
        if compare:
            full, seconds = full_lr_find(tmp, args.size, seeds[0])
            out.update(full_suggestions=full, full_lr_find_seconds=round(seconds, 1),
                       valley_ratio=round(ratio(curve["suggestions"]["valley"], full["valley"]), 2),
                       lr_ratio=round(ratio(first["lr"], lr_rules.scratch_lr(full)), 2))
        if name == "digits3":
            out["error_plain_fastai"] = [round(plain_fastai(tmp, args.size, PLAIN_LR, seed), 4)
                                         for seed in seeds]
    return out


def line(name, r):
    """Return one dataset's figures as a sentence."""
    p = r["phase_seconds"]
    text = (f"{name}: {r['images']} images in batches of {r['bs']}; quickest job "
            f"{sum(p.values()):.0f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in p.items())
            + f"); lr_find {r['lr_find_ran']} of {r['lr_find_iters']} iterations = "
            f"{r['lr_find_share']:.0%} of it (every job: {r['lr_find_shares']}); "
            f"lr {r['lr']:.1e}; error per seed {r['seeds']}: {r['error_auto']}")
    if "full_suggestions" in r:
        s, f = r["suggestions"], r["full_suggestions"]
        text += (f"; valley {s['valley']:.1e} against 100 iterations' {f['valley']:.1e} "
                 f"(x{r['valley_ratio']}), rate x{r['lr_ratio']}; 100 iterations took "
                 f"{r['full_lr_find_seconds']:.0f} s")
    if "error_plain_fastai" in r:
        text += (f"; plain fastai fit_one_cycle(6, {PLAIN_LR:.0e}) per seed: "
                 f"{r['error_plain_fastai']}")
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--small", action="store_true", help="also the 201-picture set's share")
    parser.add_argument("--seeds", default="42,1,2", help="the runs' seeds, comma-separated")
    args = parser.parse_args()
    args.seeds = [int(x) for x in args.seeds.split(",")]
    before = os.getloadavg()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average before: {loadavg()}")
    if before[0] > BUSY:
        print(f"note: the machine is busy (1-minute load above {BUSY}): seconds are noisy")
    sets = {"digits3": measure("digits3", 3, args), "digits5": measure("digits5", 5, args)}
    if args.small:
        sets["digits3-small"] = measure("digits3-small", 3, args, per_class=67, compare=False)
    for name, r in sets.items():
        print(line(name, r))
    print(f"load average after: {loadavg()}")
    compared = [r for r in sets.values() if "valley_ratio" in r]
    print(json.dumps({
        "datasets": len(compared), "cpu": cpu_model(), "loadavg_before": loadavg_text(before),
        "loadavg_after": loadavg(),
        "lr_find_share_max": max(r["lr_find_share"] for r in sets.values()),
        "suggestion_ratio_max": max(max(r["valley_ratio"], r["lr_ratio"]) for r in compared),
        "digits3_error_auto": sets["digits3"]["error_auto"][0],
        "digits3_error_plain_fastai": sets["digits3"]["error_plain_fastai"][0],
        "digits3_error_auto_max": max(sets["digits3"]["error_auto"]),
        "digits3_error_plain_fastai_max": max(sets["digits3"]["error_plain_fastai"]),
        "seeds": args.seeds,
        "sets": {name: {k: r[k] for k in ("images", "bs", "lr_find_share", "lr_find_iters", "lr",
                                          "error_auto")} for name, r in sets.items()},
    }))


def loadavg_text(load):
    """Return load averages as bench/machine.py's loadavg prints them."""
    return " ".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
