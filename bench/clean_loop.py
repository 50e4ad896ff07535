"""The loop closes: train on a dirty set, apply the cleaner's suggestions as an admin would,
retrain, and compare with a model trained on the clean set (bench/clean.py loop)."""
import random
import tempfile
import time

from clean_embeddings import CLASSES, digit_picture, junk_picture, recalls
from machine import cpu_model, loadavg


def fill(data_dir, pictures, labels):
    """Add the pictures (PNG bytes) under their labels; return their image ids in order."""
    from webapp.dataset.store import Dataset

    ds = Dataset(data_dir)
    ids = [ds.add_image(p, label=lbl, write_csv=False).image_id
           for p, lbl in zip(pictures, labels, strict=True)]
    ds.write_cleaned_csv()
    ds.close()
    return ids


def train(data_dir, args):
    """Train with the recipe (lr found, from scratch, fixed seed); return the version."""
    from webapp.model import training

    opts = training.TrainOptions(arch="resnet18", size=args.size, epochs=args.epochs,
                                 fine_tune_epochs=args.fine_tune, bs=32, lr=None,
                                 pretrained=False, lr_find_iters=30, seed=args.seed)
    return training.train(data_dir, opts, log=lambda *a: None)[0]


def accuracy(data_dir, version, pictures, truth):
    """Return the version's accuracy on held-out PIL pictures with their true labels."""
    from webapp.model import registry
    from webapp.model.classifier import Classifier

    clf = Classifier(registry.load_learner_verified(data_dir, version))
    hits = 0
    for s in range(0, len(pictures), 64):
        pred = clf.probabilities(pictures[s:s + 64]).argmax(1)
        hits += sum(clf.vocab[p] == t for p, t in zip(pred, truth[s:s + 64], strict=True))
    return hits / len(pictures)


def act(data_dir, version, outlier_share, relabel_share=0):
    """Apply the cleaner's suggestions as an admin would, through decisions.decide (what
    POST /clean/decide calls): delete the top `outlier_share` of the outlier list, then accept
    the suggested label of every label issue cleanlab flags (with `relabel_share`: of the top
    that share of the list instead) still live, one decision per suggested class.

    Return (label-issue ids, top-loss ids, outlier ids, relabelled ids, deleted ids)."""
    from webapp.cleaning import decisions, lists
    from webapp.dataset.store import Dataset

    ds = Dataset(data_dir)
    c = lists.Cleaner(ds, version)
    n = len(c.ids)
    issues = c.label_issues(limit=n).items
    losses = [i["image_id"] for i in c.top_losses(limit=n).items]
    outliers = [i["image_id"] for i in c.outliers(limit=n).items]
    delete = outliers[:round(outlier_share * n)]
    if delete:
        decisions.decide(ds, "delete", delete)
    by_label = {}
    top = issues[:round(relabel_share * n)] if relabel_share else [i for i in issues
                                                                   if i["flagged"]]
    for i in top:
        if i["image_id"] not in delete and i["suggested"] != i["label"]:
            by_label.setdefault(i["suggested"], []).append(i["image_id"])
    relabelled = []
    for label, ids in by_label.items():
        relabelled += decisions.decide(ds, "relabel", ids, label=label).changed
    ds.close()
    return [i["image_id"] for i in issues], losses, outliers, relabelled, delete


def loop(args):
    """Run the loop; return the figures (one JSON object)."""
    from sklearn.datasets import load_digits

    from tests.pictures import encode
    from webapp.cleaning import crossval, scoring

    load_before = loadavg()
    started = time.perf_counter()
    rng = random.Random(args.seed)
    digits = load_digits()
    order = rng.sample(range(len(digits.target)), args.images + args.test)
    train_at, test_at = order[:args.images], order[args.images:]
    pics = [encode(digit_picture(digits.images[i], rng, args.size), "PNG") for i in train_at]
    truth = [CLASSES[digits.target[i]] for i in train_at]
    n_junk = round(args.junk * len(pics))
    junk = [encode(junk_picture(rng, args.size), "PNG") for _ in range(n_junk)]
    junk_labels = [rng.choice(CLASSES) for _ in junk]
    flip_at = set(rng.sample(range(len(pics)), round(args.flip * len(pics))))
    dirty = [rng.choice([c for c in CLASSES if c != t]) if n in flip_at else t
             for n, t in enumerate(truth)]
    test = [digit_picture(digits.images[i], rng, args.size) for i in test_at]
    test_truth = [CLASSES[digits.target[i]] for i in test_at]
    out = {}
    with tempfile.TemporaryDirectory() as d_dir, tempfile.TemporaryDirectory() as c_dir:
        ids = fill(d_dir, pics + junk, dirty + junk_labels)
        flipped = {ids[n] for n in flip_at}
        junk_ids = set(ids[len(pics):])
        version = train(d_dir, args)
        out["acc_dirty"] = accuracy(d_dir, version, test, test_truth)
        relabelled, deleted, rounds = [], [], []
        for n in range(args.rounds):  # the lesson's loop: clean with the model, retrain, again
            scoring.score_version(d_dir, version)
            if args.cv:  # the Rescore button's thorough option: k fold models of the recipe
                crossval.cross_validate(d_dir, version, args.cv, epochs=args.cv_epochs)
            lists_now = act(d_dir, version, args.delete if n == 0 else args.delete_later,
                            args.relabel)
            if n == 0:
                issues, losses, outliers = lists_now[:3]
            relabelled += lists_now[3]
            deleted += lists_now[4]
            version = train(d_dir, args)
            rounds.append({"relabelled": len(lists_now[3]), "deleted": len(lists_now[4]),
                           "acc": accuracy(d_dir, version, test, test_truth)})
            print("round", n + 1, rounds[-1], flush=True)
        out["acc_cleaned"] = rounds[-1]["acc"]
        fill(c_dir, pics, truth)
        out["acc_clean"] = accuracy(c_dir, train(c_dir, args), test, test_truth)
    fixed = {i for i in relabelled if i in flipped}
    return {
        "flipped": len(flipped), "junk": len(junk_ids),
        "label_issue_recall_2k": recalls(issues, flipped, [2000])[2000],
        "top_loss_recall_2k": recalls(losses, flipped, [2000])[2000],
        "outlier_recall_2k": recalls(outliers, junk_ids, [2000])[2000],
        **out,
        # on a set of a few hundred the first 2000 are the whole list; the first n tell more
        "label_issue_recall_n": recalls(issues, flipped, [len(flipped)])[len(flipped)],
        "top_loss_recall_n": recalls(losses, flipped, [len(flipped)])[len(flipped)],
        "outlier_recall_n": recalls(outliers, junk_ids, [len(junk_ids)])[len(junk_ids)],
        "target_met": out["acc_cleaned"] >= out["acc_clean"] - 0.01,
        "images": len(ids), "test_images": len(test), "size": args.size,
        "epochs": f"{args.epochs}+{args.fine_tune}", "cv_folds": args.cv,
        "rule": ("relabel " + (f"the top {args.relabel:.0%} of label issues" if args.relabel
                               else "every flagged label issue") + " to the suggestion; delete "
                 f"the top {args.delete:.0%} of outliers"),
        "rounds": rounds, "relabelled": len(set(relabelled)), "relabelled_flipped": len(fixed),
        "deleted": len(deleted), "deleted_junk": len(set(deleted) & junk_ids),
        "seconds": round(time.perf_counter() - started),
        "cpu": cpu_model(), "load_before": load_before, "load_after": loadavg(),
    }
