"""Time learn.predict against the torch-free runtime (fp32 and INT8), JPEG bytes in, side by side.

    .venv/bin/python bench/predict.py                 # resnet34 at 224 px, 2 threads
    .venv/bin/python bench/predict.py --threads 1     # torch and ONNX Runtime on one thread
    .venv/bin/python bench/predict.py --images 48 --photos 8 --per-class 24   # shorter

The model is a resnet34 at 224 px TRAINED BRIEFLY FROM SCRATCH (no ImageNet weights offline) on
generated photo-like pictures: three visually distinct scenes ("dusk", "sea", "meadow": a sky
gradient, blurred blobs and sensor noise; --per-class of each, 224-500 px JPEGs) stored through
webapp.dataset.store.Dataset and trained with the project's recipe (training.train: fixed
learning rates, so no lr_find), which also builds the version's serving bundle (fp32 and INT8
ONNX, checked against the learner). A trained, confident model makes the INT8 figures mean
something; the speed itself does not depend on the weights.

Every path starts from JPEG BYTES, so decoding is inside the timing:

    learn.predict   images.decode(bytes) (full decode), then learn.predict on load_learner's
                    learner (export.pkl, cpu=True)
    runtime fp32    images.decode(bytes, draft=predictor.draft_size), then predictor.predict
                    (webapp.runtime.bundle.load(..., precision="fp32"))
    runtime INT8    the same with precision="int8" (forced even if its checks failed; the
                    table says whether they passed)

torch and ONNX Runtime get the same thread count (--threads; OMP_NUM_THREADS too, for the
bundle's load-time checks). The paths take turns chunk by chunk, the order rotating each chunk,
so a burst of load from elsewhere on the machine hits them alike. Figures are median ms per
image:

  * batch 1 on --images generated JPEGs of mixed sizes (224-500 px);
  * batch 32 on the same JPEGs: fastai's batch path is learn.dls.test_dl(decoded, bs=32) +
    learn.get_preds, the runtime's is predictor.probabilities(decoded list);
  * 12 MP photos: the validation pictures upscaled to 4032x3024 with film grain and noise,
    JPEG quality 90 (--photos of them timed): learn.predict decodes them in full, the runtime
    draft-decodes them (DCT scaling to >= 2x the model size).

Checks: fp32_max_abs_diff is the largest |runtime fp32 - learn.predict| probability over the
validation pictures (both on the same fully decoded image); int8_top1_agreement is INT8's top-1
agreement with fp32 on them; draft_top1_agreement / draft_max_abs_diff compare runtime fp32 on
each validation picture re-encoded at 12 MP, draft-decoded vs fully decoded. Worker cold start:
a fresh `python -c` process times `import webapp.runtime.bundle` + load (verification and the
load-time fp32/INT8 checks, precision "auto" as a worker loads it) and then one answer (decode +
classify, the session being made on first use), reads its VmRSS, and asserts torch, torchvision
and fastai were never imported (run --worker-runs times; medians reported, and the largest RSS:
it varies from run to run with how much of the load-time checks' memory malloc hands back).

Prints a table with ratios (learn.predict ms / path ms), the CPU, the load average before and
after, whether the targets are met, and as its LAST line ONE JSON object with the figures.
Exit status 0 when it ran (targets met or not). About a minute and a half on a quiet 2-core
machine (training: about 35 s); much longer on a busy one, whose figures it flags as noisy.
"""
import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_model, loadavg  # noqa: E402  (bench/machine.py, beside this script)

# Three scenes a model tells apart by their light: (sky colour at the top, at the bottom).
SCENES = {"dusk": ((235, 120, 60), (70, 30, 60)), "sea": ((150, 200, 240), (20, 60, 120)),
          "meadow": ((190, 220, 120), (40, 100, 30))}
SIZES = [(224, 224), (256, 256), (320, 240), (240, 320), (400, 300), (500, 375), (375, 500)]
PHOTO = (4032, 3024)
BUSY = 1.5  # 1-minute load average above which the figures are flagged as noisy
TARGETS = {"int8": 3.0, "fp32": 1.4, "worker_start_s": 1.5, "worker_rss_mb": 250}

WORKER = r"""
import json, sys, time


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


t0 = time.perf_counter()
from webapp.runtime import bundle
imported = rss_mb()
predictor = bundle.load(sys.argv[1], sys.argv[2], precision="auto", expected_sha256=sys.argv[3],
                        threads=int(sys.argv[4]))
t1 = time.perf_counter()
loaded = rss_mb()
from webapp.core import images
data = open(sys.argv[5], "rb").read()
label = predictor.predict(images.decode(data, draft=predictor.draft_size))[0][0]
t2 = time.perf_counter()
heavy = sorted(m for m in ("torch", "torchvision", "fastai") if m in sys.modules)
assert not heavy, f"the runtime imported {heavy}"
print(json.dumps({"start_s": t1 - t0, "first_answer_s": t2 - t1, "rss_mb": rss_mb(),
                  "rss_imported_mb": imported, "rss_loaded_mb": loaded,
                  "precision": predictor.precision, "label": label, "heavy": heavy}))
"""


def scene(label, rng, w, h):
    """Return a photo-like w x h picture of a scene: sky gradient, blurred blobs, noise."""
    top, bottom = (np.array(c, dtype=np.float32) + rng.uniform(-30, 30, 3)
                   for c in SCENES[label])
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    sky = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3))
    im = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 10))):
        x, y = rng.uniform(-0.1, 1, 2) * (w, h)
        r = rng.uniform(0.04, 0.25) * min(w, h)
        mix = rng.uniform(0.3, 1.0)
        colour = np.clip((1 - mix) * rng.integers(0, 256, 3) + mix * bottom, 0, 255)
        draw.ellipse([x - r, y - r * rng.uniform(0.4, 1.2), x + r, y + r],
                     fill=tuple(int(c) for c in colour))
    im = im.filter(ImageFilter.GaussianBlur(max(1, min(w, h) / 120)))
    noisy = np.asarray(im, dtype=np.int16) + rng.integers(-6, 7, (h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def photo(im, rng, size=PHOTO):
    """Return `im` upscaled to a 12 MP photo with film grain and sensor noise (not flat)."""
    w, h = size
    big = np.asarray(im.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    grain = Image.fromarray(rng.integers(88, 169, (h // 4, w // 4), dtype=np.uint8))
    grain = np.asarray(grain.resize(size, Image.Resampling.BILINEAR), dtype=np.int16) - 128
    noisy = big + (grain // 2)[..., None] + rng.integers(-8, 9, (h, w, 3), dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def jpeg(im, quality=90):
    """Return the JPEG bytes of a PIL image."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def train_model(data_dir, args):
    """Store the generated dataset and train the resnet34 on it; return (version, metrics)."""
    from webapp.dataset.store import Dataset
    from webapp.model import training

    rng = np.random.default_rng(0)
    ds = Dataset(data_dir)
    for _ in range(args.per_class):
        for label in SCENES:
            w, h = SIZES[int(rng.integers(len(SIZES)))]
            ds.add_image(jpeg(scene(label, rng, w, h)), label=label, source="bench",
                         write_csv=False)
    ds.write_cleaned_csv()
    ds.close()
    # From scratch nothing is frozen: the first stage trains the whole net at lr, the second
    # settles it at small rates. Small batches give BatchNorm's running statistics more steps.
    opts = training.TrainOptions(arch="resnet34", size=224, epochs=args.epochs,
                                 fine_tune_epochs=1, bs=4, lr=3e-3, lr_unfrozen=(1e-5, 1e-4),
                                 pretrained=False)
    with contextlib.redirect_stdout(io.StringIO()):  # fastai prints each epoch's losses
        return training.train(data_dir, opts, log=lambda *a: None)


def interleaved_ms(paths, items, per_call):
    """Return {name: median ms per image}, the paths taking turns on each chunk of `items`.

    The order rotates each chunk (a b c, b c a, ...), so no path always runs first or last.
    """
    names = list(paths)
    times = {name: [] for name in names}
    for k, i in enumerate(range(0, len(items) - per_call + 1, per_call)):
        chunk = items[i:i + per_call]
        for name in names[k % len(names):] + names[:k % len(names)]:
            t = time.perf_counter()
            paths[name](chunk)
            times[name].append((time.perf_counter() - t) * 1000 / per_call)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cold_worker(bundle_dir, version, sha256, threads, picture, runs):
    """Run the worker script in fresh processes; return the median of each figure."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    outs = []
    for _ in range(runs):
        run = subprocess.run([sys.executable, "-c", WORKER, str(bundle_dir), version, sha256,
                              str(threads), str(picture)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"the worker failed:\n{run.stderr[-2000:]}")
        outs.append(json.loads(run.stdout.strip().splitlines()[-1]))
    figures = ("start_s", "first_answer_s", "rss_mb", "rss_imported_mb", "rss_loaded_mb")
    med = {k: statistics.median(o[k] for o in outs) for k in figures}
    return {**med, "rss_max_mb": max(o["rss_mb"] for o in outs), "precision": outs[0]["precision"],
            "torch_free": all(not o["heavy"] for o in outs)}




def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    p.add_argument("--images", type=int, default=128, help="224-500 px JPEGs timed")
    p.add_argument("--photos", type=int, default=12, help="12 MP JPEGs timed")
    p.add_argument("--per-class", type=int, default=32, help="generated training pictures")
    p.add_argument("--epochs", type=int, default=3, help="first-stage epochs (then 1 more)")
    p.add_argument("--worker-runs", type=int, default=5, help="fresh worker processes")
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the bundle's load-time checks use it

    import torch
    from fastai.learner import load_learner

    from webapp.core import images
    from webapp.dataset.manifest import CLEANED_CSV
    from webapp.model import bundle as model_bundle, registry, training
    from webapp.runtime import bundle as rt

    torch.set_num_threads(args.threads)
    cpu, load_before, started = cpu_model(), loadavg(), time.monotonic()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; threads for torch and ONNX Runtime: "
          f"{args.threads}; load average before: {load_before}", flush=True)
    with tempfile.TemporaryDirectory(prefix="winnow-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        t = time.monotonic()
        version, metrics = train_model(data_dir, args)
        train_s = time.monotonic() - t
        record = metrics["bundle"]
        if record["status"] != "ready":
            print(f"no serving bundle: {record['reason']}", file=sys.stderr)
            sys.exit(2)
        version_dir = registry.models_dir(data_dir) / version
        bundle_dir = model_bundle.bundle_dir(version_dir)
        print(f"trained resnet34 at 224 px from scratch on {metrics['images']} generated "
              f"pictures in {train_s:.0f} s (with its bundle); validation error "
              f"{metrics['error_rate']:.1%}", flush=True)

        learn = load_learner(version_dir / registry.EXPORT, cpu=True)
        fp32 = rt.load(bundle_dir, version, precision="fp32", threads=args.threads)
        int8 = rt.load(bundle_dir, version, precision="int8", threads=args.threads)
        int8_passed = bool(record["int8"].get("passed"))
        draft = fp32.draft_size

        # The validation pictures, as stored, and the benchmark's own JPEGs.
        rows = [r for r in training.read_manifest_file(version_dir / CLEANED_CSV)
                if r["is_valid"] == "True"]
        valid_bytes = [(data_dir / r["name"]).read_bytes() for r in rows]
        valid_labels = [r["label"] for r in rows]
        rng = np.random.default_rng(1)
        labels = list(SCENES)
        bench = [jpeg(scene(labels[i % 3], rng, *SIZES[int(rng.integers(len(SIZES)))]))
                 for i in range(args.images)]

        # Parity on the validation pictures, every path on the same fully decoded image.
        decoded = [images.decode(b) for b in valid_bytes]
        theirs = np.stack([learn.predict(im)[2].numpy() for im in decoded])
        ours = fp32.probabilities(decoded)
        ours_int8 = int8.probabilities(decoded)
        fp32_diff = float(np.abs(ours - theirs).max())
        int8_agree = float(np.mean(ours_int8.argmax(1) == ours.argmax(1)))
        vocab = fp32.vocab
        truth = np.array([vocab.index(label) for label in valid_labels])
        accuracy = {"learn.predict": float(np.mean(theirs.argmax(1) == truth)),
                    "fp32": float(np.mean(ours.argmax(1) == truth)),
                    "int8": float(np.mean(ours_int8.argmax(1) == truth))}
        confidence = float(np.median(ours.max(1)))

        def fastai_one(chunk):
            learn.predict(images.decode(chunk[0]))

        def runtime_one(predictor):
            return lambda chunk: predictor.predict(images.decode(chunk[0], draft=draft))

        def fastai_batch(chunk):
            dl = learn.dls.test_dl([images.decode(b) for b in chunk], bs=len(chunk))
            learn.get_preds(dl=dl)

        def runtime_batch(predictor):
            return lambda chunk: predictor.probabilities([images.decode(b, draft=draft)
                                                          for b in chunk])

        one_paths = {"learn.predict": fastai_one, "runtime fp32": runtime_one(fp32),
                     "runtime INT8": runtime_one(int8)}
        for fn in one_paths.values():  # warm up
            for b in bench[:3]:
                fn([b])
        one = interleaved_ms(one_paths, bench, 1)
        batch_paths = {"learn.predict": fastai_batch, "runtime fp32": runtime_batch(fp32),
                       "runtime INT8": runtime_batch(int8)}
        for fn in batch_paths.values():
            fn(bench[:8])
        many = interleaved_ms(batch_paths, bench, 32)
        int8_agree_bench = float(np.mean(
            int8.probabilities([images.decode(b, draft=draft) for b in bench]).argmax(1)
            == fp32.probabilities([images.decode(b, draft=draft) for b in bench]).argmax(1)))
        print(f"timed {args.images} pictures at batch 1 and 32", flush=True)

        # 12 MP photos: each validation picture upscaled and re-encoded (cycled up to --photos).
        prng = np.random.default_rng(2)
        n_photos = max(args.photos, len(decoded))
        photos = [jpeg(photo(decoded[i % len(decoded)], prng)) for i in range(n_photos)]
        photo_mb = statistics.median(len(b) for b in photos) / 1e6
        full = fp32.probabilities([images.decode(b) for b in photos[:len(decoded)]])
        drafted = fp32.probabilities([images.decode(b, draft=draft)
                                      for b in photos[:len(decoded)]])
        draft_agree = float(np.mean(full.argmax(1) == drafted.argmax(1)))
        draft_diff = float(np.abs(full - drafted).max())
        drafted_size = images.decode(photos[0], draft=draft).size
        photo_paths = {"learn.predict": fastai_one, "runtime fp32": runtime_one(fp32),
                       "runtime INT8": runtime_one(int8)}
        for fn in photo_paths.values():
            fn(photos[:1])
        photo_ms = interleaved_ms(photo_paths, photos[:args.photos], 1)
        print(f"timed {args.photos} photos of {PHOTO[0]}x{PHOTO[1]}", flush=True)

        picture = Path(tmp) / "picture.jpg"
        picture.write_bytes(bench[0])
        worker = cold_worker(bundle_dir, version, record["sha256"], args.threads, picture,
                             args.worker_runs)
    load_after = loadavg()

    base, photo_base = one["learn.predict"], photo_ms["learn.predict"]
    print()
    print(f"resnet34 at 224 px, trained briefly from scratch on generated pictures; "
          f"{args.threads} threads each; JPEG bytes in (decoding timed)")
    print(f"{'path':<44}{'ms/image (median)':>18}{'vs learn.predict':>18}")
    sections = [("batch 1, 224-500 px JPEGs", one, base),
                ("batch 32 (test_dl+get_preds / probabilities)", many, many["learn.predict"]),
                (f"batch 1, {PHOTO[0]}x{PHOTO[1]} JPEGs ({photo_mb:.1f} MB)", photo_ms,
                 photo_base)]
    for title, figures, ref in sections:
        print(f"-- {title}")
        for name, ms in figures.items():
            decode = ("full decode" if name == "learn.predict" else
                      "draft decode" if figures is photo_ms else "")
            label = f"  {name}" + (f" ({decode})" if decode else "")
            print(f"{label:<44}{ms:>18.1f}{ref / ms:>17.2f}x")
    print(f"-- checks on {len(decoded)} validation pictures (median fp32 top-1 probability "
          f"{confidence:.2f})")
    print(f"  fp32 vs learn.predict, largest |probability difference|: {fp32_diff:.1e}")
    print(f"  INT8 top-1 agreement with fp32: {int8_agree:.1%} "
          f"(on the {args.images} bench pictures: {int8_agree_bench:.1%}); INT8 passed its "
          f"bundle checks: {'yes' if int8_passed else 'NO: ' + record['int8'].get('reason', '')}")
    print(f"  accuracy: learn.predict {accuracy['learn.predict']:.1%}, "
          f"fp32 {accuracy['fp32']:.1%}, INT8 {accuracy['int8']:.1%}")
    print(f"  draft decoding at 12 MP (decodes to {drafted_size[0]}x{drafted_size[1]}): top-1 "
          f"agreement with full decoding {draft_agree:.1%}, largest |probability difference| "
          f"{draft_diff:.1e}")
    print(f"-- cold worker (fresh process, median of {args.worker_runs}): import + load "
          f"{worker['start_s']:.2f} s, first answer {worker['first_answer_s']:.2f} s, serving "
          f"{worker['precision']}, torch/fastai "
          f"{'not imported' if worker['torch_free'] else 'IMPORTED'}")
    print(f"  RSS after the first answer {worker['rss_mb']:.0f} MB (largest of the runs "
          f"{worker['rss_max_mb']:.0f} MB); after the import {worker['rss_imported_mb']:.0f} MB, "
          f"after load {worker['rss_loaded_mb']:.0f} MB")
    print(f"load average before {load_before}, after {load_after}; "
          f"{time.monotonic() - started:.0f} s in all")
    if max(float(load.split()[0]) for load in (load_before, load_after)) > BUSY:
        print(f"note: the machine was busy (1-minute load average above {BUSY}): torch's "
              "thread pool loses far more to other processes on these cores than ONNX "
              "Runtime's, so learn.predict looks slower than it is; run it again when quiet")

    out = {
        "learn_predict_ms": round(base, 1), "runtime_fp32_ms": round(one["runtime fp32"], 1),
        "runtime_int8_ms": round(one["runtime INT8"], 1),
        "fp32_speedup": round(base / one["runtime fp32"], 2),
        "int8_speedup": round(base / one["runtime INT8"], 2),
        "batch32_learn_ms": round(many["learn.predict"], 1),
        "batch32_fp32_ms": round(many["runtime fp32"], 1),
        "batch32_int8_ms": round(many["runtime INT8"], 1),
        "batch32_int8_speedup": round(many["learn.predict"] / many["runtime INT8"], 2),
        "photo_learn_predict_ms": round(photo_base, 1),
        "photo_runtime_fp32_ms": round(photo_ms["runtime fp32"], 1),
        "photo_runtime_int8_ms": round(photo_ms["runtime INT8"], 1),
        "photo_fp32_speedup": round(photo_base / photo_ms["runtime fp32"], 2),
        "photo_int8_speedup": round(photo_base / photo_ms["runtime INT8"], 2),
        "photo_mb": round(photo_mb, 2),
        "int8_top1_agreement": int8_agree, "int8_top1_agreement_bench": int8_agree_bench,
        "int8_passed": int8_passed, "fp32_max_abs_diff": fp32_diff,
        "draft_top1_agreement": draft_agree, "draft_max_abs_diff": draft_diff,
        "valid_pictures": len(decoded), "valid_accuracy_fp32": accuracy["fp32"],
        "valid_accuracy_int8": accuracy["int8"],
        "worker_start_s": round(worker["start_s"], 3),
        "worker_first_answer_s": round(worker["first_answer_s"], 3),
        "worker_rss_mb": round(worker["rss_mb"], 1),
        "worker_rss_max_mb": round(worker["rss_max_mb"], 1),
        "worker_rss_loaded_mb": round(worker["rss_loaded_mb"], 1),
        "worker_precision": worker["precision"],
        "worker_torch_free": worker["torch_free"],
        "train_s": round(train_s, 1), "threads": args.threads, "cpu": cpu,
        "load_before": load_before, "load_after": load_after,
    }
    met = {
        f"INT8 >= {TARGETS['int8']}x learn.predict at 224 px": out["int8_speedup"]
        >= TARGETS["int8"],
        f"INT8 >= {TARGETS['int8']}x learn.predict on 12 MP": out["photo_int8_speedup"]
        >= TARGETS["int8"],
        f"fp32 >= {TARGETS['fp32']}x learn.predict at 224 px": out["fp32_speedup"]
        >= TARGETS["fp32"],
        f"worker import + load <= {TARGETS['worker_start_s']} s": out["worker_start_s"]
        <= TARGETS["worker_start_s"],
        f"worker RSS <= {TARGETS['worker_rss_mb']} MB": out["worker_rss_mb"]
        <= TARGETS["worker_rss_mb"],
    }
    for name, ok in met.items():
        print(f"target: {name}: {'met' if ok else 'NOT met'}")
    out["targets_met"] = all(met.values())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
