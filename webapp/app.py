"""The app factory: config, the data dir, extensions, blueprints and the shared learner."""
import os
import secrets
from pathlib import Path

from flask import Flask

from webapp import config
from webapp.core.processes import ROOT
from webapp.web import auth, cli, cli_score, errors, metrics, resources
from webapp.web.views import admin, classify, clean, jobs, label, main, media, sgd


def _secret_key(data_dir):
    """Return the data dir's secret key, generating and keeping one on first use."""
    path = Path(data_dir) / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


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
