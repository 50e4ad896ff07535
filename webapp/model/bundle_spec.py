"""The learner's validation preprocessing as a JSON-able spec the torch-free runtime replays.

The spec lists what Classifier applies (the validation split of the DataLoader's after_item and
after_batch): item steps on the PIL image, then batch steps on the float array. A step the
runtime cannot reproduce exactly is refused by name rather than approximated.
"""
from webapp.runtime.preprocess import PAD_MODES, SPEC_FORMAT

# Loss functions whose activation is a softmax over the last axis, as the runtime applies it.
SOFTMAX_LOSSES = {"CrossEntropyLossFlat", "LabelSmoothingCrossEntropyFlat"}


class SpecRefused(ValueError):
    """The learner's pipeline has a step the spec cannot express; the reason names it."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _resample_name(mode):
    from PIL import Image

    return Image.Resampling(int(mode)).name.lower()


def _item_step(t):
    """Return the spec of one item transform, None for a no-op, or raise SpecRefused."""
    from fastai.data.transforms import ToTensor
    from fastai.vision.augment import RandomResizedCrop, Resize

    name = type(t).__name__
    if type(t) is ToTensor:
        return None  # the runtime's PIL -> array conversion
    if type(t) is Resize:
        if str(t.method) not in ("crop", "squish", "pad") or str(t.pad_mode) not in PAD_MODES:
            raise SpecRefused(f"{name}: method {t.method!r} / pad_mode {t.pad_mode!r}")
        w, h = t.size  # fastai keeps (w, h)
        return {"op": "resize", "size": [int(h), int(w)], "method": str(t.method),
                "pad_mode": str(t.pad_mode), "resample": _resample_name(t.mode)}
    if type(t) is RandomResizedCrop:
        w, h = t.size
        return {"op": "random_resized_crop", "size": [int(h), int(w)],
                "val_xtra": float(t.val_xtra), "resample": _resample_name(t.mode)}
    raise SpecRefused(f"{name}: an item transform the runtime cannot reproduce")


def _batch_step(t):
    """Return the spec of one batch transform, None for a no-op, or raise SpecRefused."""
    from fastai.data.transforms import IntToFloatTensor, Normalize
    from fastai.vision.augment import AffineCoordTfm, Dihedral, Flip, Rotate, Warp, Zoom

    name = type(t).__name__
    if type(t) is IntToFloatTensor:
        if not isinstance(t.div, int | float) or not t.div:
            raise SpecRefused(f"{name}: div={t.div!r}")
        return {"op": "to_float", "div": float(t.div)}
    if type(t) is Normalize:
        if t.mean is None or t.std is None or tuple(t.axes) != (0, 2, 3):
            raise SpecRefused(f"{name}: no fixed per-channel statistics")
        mean = [float(v) for v in t.mean.flatten()]
        std = [float(v) for v in t.std.flatten()]
        if len(mean) != 3 or len(std) != 3:
            raise SpecRefused(f"{name}: {len(mean)} channel statistics, not 3")
        return {"op": "normalize", "mean": mean, "std": std}
    # Flip, Rotate, Zoom, Warp (and aug_transforms' composition of them) keep split_idx None,
    # but at validation they sample an identity grid of the same size: a no-op to rounding.
    # Given an output size they would resize, which the spec does not express.
    if type(t) in (AffineCoordTfm, Dihedral, Flip, Rotate, Warp, Zoom):
        if t.size is None:
            return None
        raise SpecRefused(f"{name}: resizes the batch to {t.size}")
    raise SpecRefused(f"{name}: a batch transform the runtime cannot reproduce")


def _validation_steps(pipeline):
    """Yield the transforms that run at validation, as Classifier keeps them."""
    for t in pipeline.fs:
        # Training-only steps (split_idx 0, e.g. Brightness) never run at validation.
        if getattr(t, "split_idx", None) in (None, 1):
            yield t


def spec_from_pipelines(after_item, after_batch):
    """Return the spec for fastai after_item / after_batch pipelines at validation."""
    item = [s for s in map(_item_step, _validation_steps(after_item)) if s is not None]
    batch = [s for s in map(_batch_step, _validation_steps(after_batch)) if s is not None]
    if not item:
        raise SpecRefused("no Resize: the exported model needs a fixed input size")
    if not batch or batch[0]["op"] != "to_float":
        raise SpecRefused("no IntToFloatTensor first in the batch transforms")
    return {"format": SPEC_FORMAT, "item": item, "batch": batch}


def preprocessing_spec(learn):
    """Return the JSON-able spec of the learner's validation preprocessing and activation."""
    loss = type(learn.loss_func).__name__
    if loss not in SOFTMAX_LOSSES:
        raise SpecRefused(f"{loss}: the runtime applies a softmax, not this loss's activation")
    valid = learn.dls.valid
    return {**spec_from_pipelines(valid.after_item, valid.after_batch), "activation": "softmax"}
