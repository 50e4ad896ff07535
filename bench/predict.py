"""Time learn.predict against Winnow's serving path, side by side on the same images.

    .venv/bin/python bench/predict.py [--arch resnet34] [--size 224] [--images 40] [--threads 2]

Builds an untrained learner (no ImageNet weights offline; the speed does not depend on the
weights), exports and reloads it as serving does, then prints the median milliseconds per image
for learn.predict, the torch serving path (webapp.model.classifier) and the ONNX Runtime path
(webapp.model.onnx_model) at batch 1 and batch 32, the ONNX model alone on a prepared tensor (the
ceiling for any preprocessing work), the ratios, and the largest probability
differences (torch path vs learn.predict must stay below 1e-5; ONNX vs torch below 1e-4).
"""
import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build_model(data_dir, arch, size):
    """Export an untrained learner on a small generated dataset; return the loaded copy."""
    from fastai.learner import load_learner

    from tests.pictures import tinted_set
    from webapp.dataset.store import Dataset
    from webapp.model import training

    ds = Dataset(data_dir)
    for label, data in tinted_set(per_class=8, size=64):
        ds.add_image(data, label=label, write_csv=False)
    ds.write_cleaned_csv()
    ds.close()
    learn = training.build_learner(data_dir, training.TrainOptions(arch=arch, size=size, bs=8),
                                   pretrained=False)
    learn.export(Path(data_dir) / "export.pkl")
    return load_learner(Path(data_dir) / "export.pkl", cpu=True)


def pictures(n, seed=0):
    """Return n RGB pictures of mixed sizes, as users upload them."""
    from tests.pictures import tinted

    rng = random.Random(seed)
    return [tinted(rng.choice(["red", "blue"]), rng, rng.choice([180, 256, 320, 500]))
            for _ in range(n)]


def interleaved_ms(paths, items, per_call):
    """Return {name: median ms per image}, running the paths in turn on each chunk.

    Taking turns chunk by chunk keeps a shared, noisy machine from favouring one path.
    """
    times = {name: [] for name in paths}
    for i in range(0, len(items) - per_call + 1, per_call):
        chunk = items[i:i + per_call]
        for name, fn in paths.items():
            t = time.perf_counter()
            fn(chunk)
            times[name].append((time.perf_counter() - t) * 1000 / per_call)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet34")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from webapp.model.classifier import Classifier
    from webapp.model.onnx_model import OnnxClassifier, export_onnx

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        learn = build_model(tmp, args.arch, args.size)
        clf = Classifier(learn, "bench")
        learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
        imgs = pictures(args.images)
        for im in imgs[:3]:  # warm up both paths
            learn.predict(im)
            clf.predict(im)
        export_onnx(learn, Path(tmp) / "model.onnx", args.size)
        onnx = OnnxClassifier(learn, Path(tmp) / "model.onnx", "bench")
        onnx.predict(imgs[0])
        prepared = onnx._inputs(imgs[:1])
        one = interleaved_ms({
            "learn.predict": lambda c: learn.predict(c[0]),
            "torch path, batch 1": lambda c: clf.predict(c[0]),
            "ONNX Runtime, batch 1": lambda c: onnx.predict(c[0]),
            # The ceiling: the ONNX model alone on a prepared tensor, no decoding or transforms.
            "ONNX model only, batch 1": lambda c: onnx._forward(prepared),
        }, imgs, 1)
        many = interleaved_ms({"torch path, batch 32": clf.predict_batch,
                               "ONNX Runtime, batch 32": onnx.predict_batch}, imgs, 32)
        onnx_diff = float(abs(onnx.probabilities(imgs[:32]) - clf.probabilities(imgs[:32])).max())
        top1_same = all(onnx.predict(im)[0][0] == learn.predict(im)[0] for im in imgs[:32])
        diff = max(
            max(abs(dict(clf.predict(im))[c] - float(pr))
                for c, pr in zip(clf.vocab, learn.predict(im)[2], strict=True))
            for im in imgs[:20]
        )
    print(f"{args.arch} at {args.size}px, {args.images} images, torch threads {args.threads}")
    print(f"{'path':<28}{'ms/image (median)':>20}{'vs learn.predict':>20}")
    fastai_ms, onnx_1 = one["learn.predict"], one["ONNX Runtime, batch 1"]
    for name, ms in {**one, **many}.items():
        print(f"{name:<28}{ms:>20.1f}{fastai_ms / ms:>19.2f}x")
    print(f"torch path vs learn.predict: largest |probability difference| {diff:.2e} "
          "(must be < 1e-5)")
    print(f"ONNX vs torch path: largest |probability difference| {onnx_diff:.2e} "
          f"(must be <= 1e-4); same top-1 as learn.predict: {'yes' if top1_same else 'NO'}")
    ceiling = fastai_ms / one["ONNX model only, batch 1"]
    print(f"with no preprocessing at all, batch-1 serving could be at most {ceiling:.2f}x faster")
    print(f"target: batch-1 serving >= 1.6x faster than learn.predict: "
          f"{fastai_ms / onnx_1:.2f}x, {'met' if fastai_ms / onnx_1 >= 1.6 else 'NOT met'}")


if __name__ == "__main__":
    main()
