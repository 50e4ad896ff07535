"""Inference with a loaded learner: learn.predict's probabilities, without a DataLoader per call."""
import copy

# One Prediction type whichever path serves (`X as X` marks a re-export).
from webapp.runtime.bundle import Prediction as Prediction, ranked


class Classifier:
    """Apply a learner's own inference transforms (what dls.test_dl applies) and its model."""

    runtime, precision = "fastai", "fp32"
    draft_size = None  # decode in full, as learn.predict does
    note = ""  # why the runtime does not serve this version, when it is the one serving

    def __init__(self, learn, version=None):
        import torch

        self.version = version
        self.learn = learn
        self.vocab = [str(v) for v in learn.dls.vocab]
        valid = learn.dls.valid  # test_dl uses the validation transforms: no augmentation
        # Pipelines carry the split of the last DataLoader pass; fix ours to validation (1), so
        # Resize crops the centre and the augmentations (split 0 only) are skipped.
        self.after_item = copy.copy(valid.after_item)
        self.after_batch = copy.copy(valid.after_batch)
        for pipe in (self.after_item, self.after_batch):
            pipe.split_idx = 1
            # Dropping the training-only steps (which split 1 skips anyway) saves their
            # per-call dispatch: about 2 ms per image with the default augmentations.
            pipe.fs = pipe.fs.filter(lambda t: getattr(t, "split_idx", None) in (None, 1))
        self.model = learn.model.eval()
        self.activation = getattr(learn.loss_func, "activation", lambda x: torch.softmax(x, -1))

    def _inputs(self, images):
        import torch
        from fastai.vision.core import PILImage

        items = [self.after_item((PILImage.create(im),))[0] for im in images]
        return self.after_batch((torch.stack(items),))[0]

    def _forward(self, x):
        """Return the model's raw outputs for a prepared batch."""
        return self.model(x)

    def probabilities(self, images):
        """Return an (n, classes) numpy array of probabilities for RGB PIL images."""
        import torch

        with torch.inference_mode():
            return self.activation(self._forward(self._inputs(images))).float().numpy()

    def predict_batch(self, images):
        """Return one Prediction per image."""
        return [Prediction(ranked(self.vocab, probs)) for probs in self.probabilities(images)]

    def predict(self, image):
        """Return [(label, prob), ...] for one image, most likely first."""
        return self.predict_batch([image])[0].ranked

    def embed(self, images):
        """Return the penultimate activations (input of the last layer) as an (n, d) array."""
        return self.scores(images)[1]

    def scores(self, images):
        """Return (probabilities, embeddings) from one pass through the model (torch, always).

        The embedding is the penultimate activations: the head's last layer maps it to the logits.
        """
        import torch

        body, head = self.model[0], self.model[1]
        with torch.inference_mode():
            feats = head[:-1](body(self._inputs(images)))
            probs = self.activation(head[-1](feats))
        return probs.float().numpy(), feats.float().numpy()
