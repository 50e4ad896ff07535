"""Per-app resources reached through accessors: the dataset store and the shared learner."""
import logging

from flask import current_app, g
from flask_wtf.csrf import CSRFProtect

from . import registry
from .store import Dataset

csrf = CSRFProtect()
log = logging.getLogger("winnow")


class SharedModel:
    """The process's active learner, loaded once; None until a model exists."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.version, self.learner, self.error = None, None, None

    def load(self):
        """Load the active version, verifying its sha256 first; remember why if it fails."""
        try:
            self.version, self.learner = registry.load_active(self.data_dir)
            self.error = None
        except Exception as e:  # the app keeps running without a model, and says why
            self.version, self.learner, self.error = None, None, str(e)
            log.error("could not load the active model: %s", e)
        return self

    @property
    def ready(self):
        """Tell whether a model is loaded."""
        return self.learner is not None


def get_dataset():
    """Return this request's Dataset on the app's data dir."""
    if "dataset" not in g:
        cfg = current_app.config
        g.dataset = Dataset(cfg["DATA_DIR"], cfg["VALID_PCT"], cfg["SPLIT_SEED"], cfg["MAX_PIXELS"])
    return g.dataset


def get_model():
    """Return the process's shared model."""
    return current_app.extensions["winnow.model"]


def _close_dataset(exc=None):
    dataset = g.pop("dataset", None)
    if dataset is not None:
        dataset.close()


def init_app(app):
    """Wire the store and the shared learner (loaded now, at import time) into the app."""
    csrf.init_app(app)
    app.teardown_appcontext(_close_dataset)
    model = SharedModel(app.config["DATA_DIR"])
    if app.config["LOAD_MODEL"]:
        model.load()
    app.extensions["winnow.model"] = model
