"""Turn an RGB image into the model's input as fastai's validation pipeline does, without torch.

The spec comes from webapp.model.bundle_spec. Every step copies fastai's arithmetic (its crop
box, integer rounding, torchvision's padding and Pillow's resize), so the result matches the
learner's own tensor to float rounding.
"""
import math

import numpy as np
from PIL import Image

SPEC_FORMAT = 1
# fastai's pad modes, as the numpy modes torchvision pads a PIL image with.
PAD_MODES = {"zeros": "constant", "border": "edge", "reflection": "reflect"}


class SpecError(ValueError):
    """The spec asks for something this runtime cannot do."""


def _resample(step):
    try:
        return Image.Resampling[step["resample"].upper()]
    except KeyError:
        raise SpecError(f"unknown resample filter {step['resample']!r}") from None


def _crop_pad(im, size, tl, pad_mode="zeros", resize_to=None, resample=Image.Resampling.BILINEAR):
    """Crop a (w, h) box at tl, padding where it leaves the image, as fastai's _do_crop_pad."""
    orig = im.size
    end = [t + s for t, s in zip(tl, size, strict=True)]
    # fastai's own conditions, kept as they are: they decide which Pillow calls run.
    if any(t >= 0 for t in tl) or any(e <= o for e, o in zip(end, orig, strict=True)):
        low = [max(t, 0) for t in tl]
        im = im.crop((*low, *(min(e, o) for e, o in zip(end, orig, strict=True))))
    before = [max(-t, 0) for t in tl]
    after = [max(e - o, 0) for e, o in zip(end, orig, strict=True)]
    if any(before) or any(after):
        if pad_mode not in PAD_MODES:
            raise SpecError(f"unknown pad mode {pad_mode!r}")
        widths = ((before[1], after[1]), (before[0], after[0]), (0, 0))
        im = Image.fromarray(np.pad(np.asarray(im), widths, mode=PAD_MODES[pad_mode]))
    if resize_to is not None:
        im = im.resize(tuple(resize_to), resample)
    return im


def _resize(im, step):
    """Apply fastai's Resize at validation: the centred crop, squish or pad box, then resize."""
    height, width = step["size"]
    target = (width, height)
    w, h = im.size
    if step["method"] == "squish":
        return _crop_pad(im, (w, h), (0, 0), step["pad_mode"], target, _resample(step))
    if step["method"] not in ("crop", "pad"):
        raise SpecError(f"unknown resize method {step['method']!r}")
    # Resize.encodes: the scale m of the box, truncated with int() as fastai does.
    ratio_w, ratio_h = w / width, h / height
    smaller = ratio_w < ratio_h if step["method"] == "crop" else ratio_w > ratio_h
    m = ratio_w if smaller else ratio_h
    box = (int(m * width), int(m * height))
    tl = (int(0.5 * (w - box[0])), int(0.5 * (h - box[1])))
    return _crop_pad(im, box, tl, step["pad_mode"], target, _resample(step))


def _random_resized_crop(im, step):
    """Apply RandomResizedCrop at validation: squish to size plus val_xtra, crop the centre."""
    height, width = step["size"]
    xtra = math.ceil(max(width, height) * step["val_xtra"] / 8) * 8
    final = (width + xtra, height + xtra)
    im = _crop_pad(im, im.size, (0, 0), "zeros", final, _resample(step))
    if xtra:
        tl = ((final[0] - width) // 2, (final[1] - height) // 2)
        im = _crop_pad(im, (width, height), tl)
    return im


ITEM_STEPS = {"resize": _resize, "random_resized_crop": _random_resized_crop}


def _batch_step(x, step):
    if step["op"] == "to_float":
        return x / np.float32(step["div"])
    if step["op"] == "normalize":
        mean = np.asarray(step["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(step["std"], dtype=np.float32).reshape(1, -1, 1, 1)
        return (x - mean) / std
    raise SpecError(f"unknown batch step {step['op']!r}")


def check_format(spec):
    """Refuse a spec written for another runtime."""
    if spec.get("format") != SPEC_FORMAT:
        raise SpecError(f"spec format {spec.get('format')!r}; this runtime reads {SPEC_FORMAT}")


def item_pixels(image, spec):
    """Return the (h, w, 3) uint8 pixels after the spec's item steps, for one RGB PIL image."""
    check_format(spec)
    if image.mode != "RGB":
        # fastai would keep the mode and feed the model the wrong number of channels.
        raise ValueError(f"prepare needs an RGB image (core.images.decode), not {image.mode}")
    for step in spec["item"]:
        if step["op"] not in ITEM_STEPS:
            raise SpecError(f"unknown item step {step['op']!r}")
        image = ITEM_STEPS[step["op"]](image, step)
    return np.asarray(image, dtype=np.uint8)


def batch_input(pixels, spec):
    """Return the (n, 3, h, w) float32 model input for (n, h, w, 3) uint8 item pixels."""
    x = np.asarray(pixels, dtype=np.uint8).transpose(0, 3, 1, 2).astype(np.float32)
    for step in spec["batch"]:
        x = _batch_step(x, step)
    return np.ascontiguousarray(x, dtype=np.float32)


def prepare(image, spec):
    """Return the (1, 3, h, w) float32 model input for one RGB PIL image."""
    return batch_input(item_pixels(image, spec)[None], spec)


def prepare_batch(images, spec):
    """Return the (n, 3, h, w) float32 model input for RGB PIL images of any sizes."""
    return batch_input(np.stack([item_pixels(im, spec) for im in images]), spec)


def input_size(spec):
    """Return the (height, width) the item steps resize to (the last step's size)."""
    return tuple(spec["item"][-1]["size"])


def draft_size(spec, factor=2):
    """Return the smallest (w, h) a JPEG may be draft-decoded to: `factor` times the model size.

    A JPEG's DCT scaling keeps the aspect ratio and never goes below the size asked for; a square
    request of the larger side covers either orientation (EXIF may turn the picture).
    """
    side = factor * max(input_size(spec))
    return side, side
