"""Per-app resources reached through accessors: the dataset store and the shared learner."""
import functools
import logging
import os
import threading
import time

from flask import current_app, g, request
from flask_wtf.csrf import CSRFProtect

from webapp.dataset.store import Dataset
from webapp.model import registry, serving
from webapp.runtime import follow
from webapp.web import metrics

csrf = CSRFProtect()
log = logging.getLogger("winnow")


def upload_cap(config_key):
    """Give a route a larger request cap than MAX_CONTENT_LENGTH: the setting `config_key`.

    The CSRF check reads the form, so it runs here, after the cap is raised (and after any
    decorator above this one, such as admin_required: strangers never get the larger cap).
    """
    def decorate(view):
        @functools.wraps(view)
        def capped(*args, **kwargs):
            request.max_content_length = current_app.config[config_key]
            csrf.protect()
            return view(*args, **kwargs)
        return csrf.exempt(capped)
    return decorate


class _Served:
    """What /readyz, the pages and /metrics ask of whatever serves: the admin's or a node's."""

    classifier = None
    _marked = None

    @property
    def version(self):
        """Return the served version id, or None."""
        return self.classifier.version if self.classifier else None

    @property
    def ready(self):
        """Tell whether a model is loaded."""
        return self.classifier is not None

    def describe(self):
        """Return how the model is served, for /readyz."""
        served = self.classifier
        if served is None:
            return {}
        return {"runtime": served.runtime, "precision": served.precision, "note": served.note}

    def _mark_served_version(self):
        # Per serving process (not the gunicorn master; a fork starts with empty metrics).
        mark = (os.getpid(), self.version)
        if mark != self._marked:
            metrics.set_active_model(self._marked[1] if self._marked else None, self.version)
            self._marked = mark


class SharedModel(_Served):
    """The process's active classifier: loaded at start, swapped when models/ACTIVE changes."""

    CHECK_EVERY = 1.0  # seconds between stats of models/ACTIVE

    def __init__(self, data_dir, precision="auto"):
        self.data_dir = data_dir
        self.precision = precision
        self.classifier, self.error = None, None
        self._seen, self._checked = None, 0.0
        self._lock = threading.Lock()

    def _active_stamp(self):
        try:
            st = os.stat(registry.models_dir(self.data_dir) / "ACTIVE")
            return st.st_ino, st.st_mtime_ns, st.st_size
        except FileNotFoundError:
            return None

    def load(self):
        """Load the active version, verifying its sha256 first; remember why if it fails."""
        self._seen = self._active_stamp()
        try:
            version = registry.active_version(self.data_dir)
            # One reference swap: requests in flight keep the classifier they started with.
            self.classifier = (serving.load_served(self.data_dir, version, self.precision)
                               if version is not None else None)
            self.error = None
        except Exception as e:  # the app keeps running on what it had, and says why
            self.error = str(e)
            log.error("could not load the active model: %s", e)
        return self

    def refresh(self):
        """Reload if models/ACTIVE was replaced (a cheap stat, at most once a second)."""
        self._mark_served_version()
        now = time.monotonic()
        if now - self._checked < self.CHECK_EVERY:
            return
        self._checked = now
        if self._active_stamp() != self._seen and self._lock.acquire(blocking=False):
            try:
                self.load()
            finally:
                self._lock.release()


class NodeModel(_Served):
    """A serving node's classifier: its Follower's, kept in step with the model source."""

    def __init__(self, follower):
        self.follower = follower

    @property
    def classifier(self):
        """Return the predictor serving now (one reference: a swap cannot split a request)."""
        return self.follower.predictor

    @property
    def error(self):
        """Return why the node serves nothing, or its source's last error."""
        return self.follower.last_error or (None if self.ready else "no model pulled yet")

    def describe(self):
        """Return how the model is served and the state of the model source."""
        return {**super().describe(), "source": self.follower.describe()}

    def start(self):
        """Follow the source from this process (a gunicorn worker calls it once forked)."""
        self.follower.start()

    def refresh(self):
        """Make sure this process follows, and publish what it serves and its source's state."""
        self.follower.start()
        self._mark_served_version()
        checked = self.follower.checked_at
        metrics.set_source_state(self.follower.source.location, self.follower.state == "ok",
                                 time.time() - checked if checked else None)


def data_dir():
    """Return the app's data directory."""
    return current_app.config["DATA_DIR"]


def get_dataset():
    """Return this request's Dataset on the app's data dir."""
    if "dataset" not in g:
        g.dataset = Dataset.from_config(current_app.config)
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
    model = SharedModel(app.config["DATA_DIR"], app.config["PRECISION"])
    if app.config["LOAD_MODEL"]:
        model.load()
        app.before_request(model.refresh)
    app.extensions["winnow.model"] = model


def init_node(app):
    """Wire a serving node's model: the cached version now, then the source, followed from
    each worker (gunicorn's post_worker_init starts it; the first request does otherwise)."""
    cfg = app.config
    source = follow.source_from_setting(cfg["MODEL_SOURCE"], cfg["NODE_TOKEN"])
    follower = follow.Follower(source, cfg["MODEL_CACHE"], cfg["PRECISION"],
                               poll=cfg["SOURCE_POLL"], on_failure=metrics.record_source_failure)
    model = NodeModel(follower)
    if cfg["LOAD_MODEL"]:
        follower.load_cached()
        follower.check()  # once now: a node that can reach its source starts on the active version
        app.before_request(model.refresh)
    app.extensions["winnow.model"] = model
