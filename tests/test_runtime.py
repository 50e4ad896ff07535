"""The torch-free runtime prepares images and runs the model exactly as the learner does."""
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.pictures import encode
from webapp.core import images
from webapp.model import bundle, bundle_spec, registry, training
from webapp.model.bundle_spec import SpecRefused
from webapp.runtime import bundle as rt
from webapp.runtime.preprocess import prepare
from webapp.runtime.session import Session

ROOT = Path(__file__).resolve().parent.parent
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def noise(w, h, mode="RGB", seed=0):
    """Return a picture of random pixels: any resampling difference shows in it."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode)


@functools.cache
def picture(kind):
    """Return an RGB image of a kind a user uploads, decoded the way the app decodes it."""
    if kind == "huge":  # built directly: encoding 3000x2000 noise would only slow the test
        return noise(3000, 2000, seed=1)
    if kind == "palette":
        return images.decode(encode(noise(40, 25, seed=2).quantize(64), "PNG"))
    if kind == "exif-rotated":  # a phone's JPEG: stored 45x26, shown turned a quarter (26x45)
        exif = Image.Exif()
        exif[images.ORIENTATION_TAG] = 6
        image = images.decode(encode(noise(45, 26, seed=7), "JPEG", exif=exif.tobytes()))
        assert image.size == (26, 45)
        return image
    source = {"wide": noise(57, 31, seed=3), "tiny": noise(5, 3, seed=4),
              "grayscale": noise(23, 41, "L", seed=5), "rgba": noise(33, 33, "RGBA", seed=6)}
    return images.decode(encode(source[kind], "PNG"))


def item_transform(name):
    """Return the fastai item transform for a name; sizes are (h, w) and not square."""
    from fastai.vision.augment import RandomResizedCrop, Resize

    if name == "rrc":
        return RandomResizedCrop((20, 28))
    method, _, pad_mode = name.partition("-")
    return Resize((20, 28), method=method, pad_mode=pad_mode or "reflection")


def fastai_pipelines(item_tfms, batch_tfms, stats=IMAGENET):
    """Return validation after_item / after_batch pipelines as a DataLoader would hold them."""
    from fastai.vision.all import IntToFloatTensor, Normalize, Pipeline, ToTensor

    norm = [Normalize.from_stats(*stats, cuda=False)] if stats else []
    after_item = Pipeline([*item_tfms, ToTensor()], split_idx=1)
    after_batch = Pipeline([IntToFloatTensor(), *batch_tfms, *norm], split_idx=1)
    return after_item, after_batch


def fastai_input(image, after_item, after_batch):
    """Return fastai's model input for one image, the way Classifier computes it."""
    import torch
    from fastai.vision.core import PILImage

    x = after_item((PILImage.create(image),))[0]
    return after_batch((torch.stack([x]),))[0].numpy()


METHODS = ["crop", "squish", "pad-zeros", "pad-border", "pad-reflection", "rrc"]
KINDS = ["wide", "tiny", "huge", "grayscale", "palette", "rgba", "exif-rotated"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_prepare_matches_fastai_validation_pipeline(method, kind):
    from fastai.vision.augment import aug_transforms

    # aug_transforms' steps run at validation too (Flip's identity grid) or not at all.
    after_item, after_batch = fastai_pipelines([item_transform(method)], aug_transforms())
    spec = json.loads(json.dumps(bundle_spec.spec_from_pipelines(after_item, after_batch)))
    image = picture(kind)
    assert image.mode == "RGB"
    ours = prepare(image, spec)
    theirs = fastai_input(image, after_item, after_batch)
    assert ours.shape == theirs.shape == (1, 3, 20, 28) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-5


def test_the_spec_of_a_trained_learner_reads_as_its_recipe(trained_dir):
    data_dir, version, _ = trained_dir
    spec = bundle_spec.preprocessing_spec(registry.load_learner_verified(data_dir, version))
    assert spec["item"] == [{"op": "resize", "size": [32, 32], "method": "crop",
                             "pad_mode": "reflection", "resample": "bilinear"}]
    # vision_learner adds Normalize only for pretrained weights; this tiny model has none, and
    # aug_transforms' Flip and Brightness do nothing at validation.
    assert spec["batch"] == [{"op": "to_float", "div": 255.0}]
    assert spec["activation"] == "softmax"


def validation_images(data_dir, n=6):
    rows = [r for r in training.read_manifest(data_dir) if str(r["is_valid"]) == "True"][:n]
    return [images.decode((Path(data_dir) / r["name"]).read_bytes()) for r in rows]


def test_runtime_probabilities_match_learn_predict(trained_dir):
    data_dir, version, _ = trained_dir
    learn = registry.load_learner_verified(data_dir, version)
    spec = json.loads(json.dumps(bundle_spec.preprocessing_spec(learn)))
    session = Session(bundle.bundle_dir(registry.models_dir(data_dir) / version) / rt.FP32)
    pictures = validation_images(data_dir) + [picture("wide"), picture("tiny")]
    assert len(pictures) == 8
    for image in pictures:
        ours = session.probabilities(prepare(image, spec))[0]
        _, _, theirs = learn.predict(image)
        assert np.abs(ours - theirs.numpy()).max() <= 1e-4


def refused_pipelines():
    from fastai.vision.all import Normalize
    from fastai.vision.augment import CropPad, Flip, RatioResize, Resize

    return {"CropPad": ([CropPad(16)], []), "RatioResize": ([RatioResize(16)], []),
            "Flip": ([Resize(16)], [Flip(size=8)]), "Normalize": ([Resize(16)], [Normalize()])}


@pytest.mark.parametrize("name", ["CropPad", "RatioResize", "Flip", "Normalize"])
def test_a_step_the_runtime_cannot_reproduce_is_refused_by_name(name):
    item_tfms, batch_tfms = refused_pipelines()[name]
    after_item, after_batch = fastai_pipelines(item_tfms, batch_tfms, stats=None)
    with pytest.raises(SpecRefused, match=name):
        bundle_spec.spec_from_pipelines(after_item, after_batch)


def test_a_learner_whose_loss_is_not_a_softmax_is_refused(trained_dir):
    from fastai.losses import BCEWithLogitsLossFlat

    data_dir, version, _ = trained_dir
    learn = registry.load_learner_verified(data_dir, version)
    learn.loss_func = BCEWithLogitsLossFlat()
    with pytest.raises(SpecRefused, match="BCEWithLogitsLossFlat"):
        bundle_spec.preprocessing_spec(learn)
