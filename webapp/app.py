"""The app factory: config, the data dir, extensions, blueprints and the shared learner."""
import fcntl
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from webapp import config
from webapp.core import files
from webapp.core.processes import ROOT
from webapp.jobs import runner
from webapp.runtime.bundle import PRECISIONS
from webapp.web import auth, cli, cli_backup, cli_score, errors, headers, metrics, resources
from webapp.web.views import admin, classify, clean, jobs, label, main, media, sgd


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
    app.config["DATA_DIR"] = str(Path(app.config["DATA_DIR"] or app.instance_path).resolve())
    _make_data_dir(Path(app.config["DATA_DIR"]), app.logger)
    # A killed run: its job row, pending version and tmp files.
    runner.reap(app.config["DATA_DIR"], sweep=True)
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or _secret_key(app.config["DATA_DIR"])
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["SESSION_HOURS"])
    hops = app.config["TRUSTED_PROXIES"]
    if hops > 0:  # the client's address and scheme come from the proxies' headers
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    for extension in (metrics, resources, errors, headers, auth, cli, cli_score, cli_backup):
        extension.init_app(app)
    for view in (main, classify, admin, sgd, jobs, media, label, clean):
        app.register_blueprint(view.bp)
    return app
