"""The app factory: config, the data dir, extensions, blueprints and the shared learner."""
import fcntl
import secrets
from pathlib import Path

from flask import Flask

from webapp import config
from webapp.core import files
from webapp.core.processes import ROOT
from webapp.web import auth, cli, cli_score, errors, metrics, resources
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


def create_app(test_config=None):
    """Create the Winnow app: config, data dir, extensions, blueprints, the shared learner."""
    app = Flask(__name__, instance_relative_config=True,
                template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.from_mapping(config.from_environment())
    if test_config:
        app.config.from_mapping(test_config)
    app.config["DATA_DIR"] = str(Path(app.config["DATA_DIR"] or app.instance_path).resolve())
    Path(app.config["DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or _secret_key(app.config["DATA_DIR"])

    for extension in (metrics, resources, errors, auth, cli, cli_score):
        extension.init_app(app)
    for view in (main, classify, admin, sgd, jobs, media, label, clean):
        app.register_blueprint(view.bp)
    return app
