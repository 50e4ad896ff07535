"""The app factory: config, the data dir, extensions, blueprints and the shared learner."""
import fcntl
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from webapp import config
from webapp.core import files, words
from webapp.core.processes import ROOT
from webapp.jobs import runner
from webapp.runtime.bundle import PRECISIONS
from webapp.web import auth, cli, cli_backup, cli_score, errors, headers, metrics, resources
from webapp.web.limits import limiter
from webapp.web.views import admin, classify, clean, jobs, label, main, media, registry, sgd

ROLES = ("admin", "node")


def _secret_key(data_dir):
    """Return the data dir's secret key, generating and keeping one on first use."""
    path = Path(data_dir) / "secret_key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        try:
            files.create_whole(path, secrets.token_hex(32), perms=0o600)
        except FileExistsError:
            pass  # another worker created it first: its key is whole, and every worker uses it
        return path.read_text().strip()
    return key or _replace_blank_key(path)


def _replace_blank_key(path):
    """Replace an empty key file (an older writer's crash) with a new key, once for all workers."""
    with open(path, "rb") as blank:
        fcntl.flock(blank, fcntl.LOCK_EX)  # workers that found it blank take turns: one writes
        key = path.read_text().strip()
        if not key:
            key = secrets.token_hex(32)
            files.write_atomic(path, key, perms=0o600)
    return key


def _make_data_dir(path, logger):
    """Create the data dir, and keep it to Winnow's user: it holds the secret key and the store."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_uid == os.getuid():  # a dir the operator's root made is theirs to set
            path.chmod(0o700)
    except OSError as e:  # a read-only mount: its modes are the operator's choice
        logger.warning("could not make the data directory private (0700): %s", e)


def create_app(test_config=None):
    """Create the Winnow app: config, data dir, extensions, blueprints, the shared learner."""
    app = Flask(__name__, instance_relative_config=True,
                template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.from_mapping(config.from_environment())
    if test_config:
        app.config.from_mapping(test_config)
    if app.config["PRECISION"] not in PRECISIONS:
        raise ValueError(f"WINNOW_PRECISION={app.config['PRECISION']!r}: "
                         f"choose one of {', '.join(PRECISIONS)}")
    if app.config["ROLE"] not in ROLES:
        raise ValueError(f"WINNOW_ROLE={app.config['ROLE']!r}: choose one of {', '.join(ROLES)}")
    app.jinja_env.globals["winnow_role"] = app.config["ROLE"]
    app.jinja_env.filters["plural"] = words.plural  # {{ n|plural("image") }}: "1 image", "2 images"
    hops = app.config["TRUSTED_PROXIES"]
    if hops > 0:  # the client's address and scheme come from the proxies' headers
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    if app.config["ROLE"] == "node":
        return _serving_node(app)
    app.config["DATA_DIR"] = str(Path(app.config["DATA_DIR"] or app.instance_path).resolve())
    _make_data_dir(Path(app.config["DATA_DIR"]), app.logger)
    # A killed run: its job row, pending version and tmp files.
    runner.reap(app.config["DATA_DIR"], sweep=True)
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or _secret_key(app.config["DATA_DIR"])
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["SESSION_HOURS"])

    for extension in (metrics, resources, errors, headers, auth, cli, cli_score, cli_backup):
        extension.init_app(app)
    for view in (main, classify, admin, sgd, jobs, media, label, clean, registry):
        app.register_blueprint(view.bp)
    app.register_blueprint(main.docs)
    return app


def _serving_node(app):
    """A serving node: the public classify pages and the probes, on the model it follows.

    No store, no sessions, no admin: nothing here is kept but the model cache. Its classify
    form carries no CSRF token, as there is no login for a forged request to ride on.
    """
    cache = Path(app.config["MODEL_CACHE"] or Path(app.instance_path) / "model-cache").resolve()
    _make_data_dir(cache, app.logger)
    app.config["MODEL_CACHE"] = str(cache)
    app.jinja_env.globals["is_admin"] = lambda: False
    for extension in (metrics, errors, headers, limiter):
        extension.init_app(app)
    resources.init_node(app)
    for view in (main, classify):
        app.register_blueprint(view.bp)
    return app
