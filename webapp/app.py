"""Winnow: from scraped pictures to a served fastai image classifier."""
import os
import secrets
from pathlib import Path

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


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
    from . import config

    app = Flask(__name__, instance_relative_config=True,
                template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.from_mapping(config.from_environment())
    if test_config:
        app.config.from_mapping(test_config)
    app.config["DATA_DIR"] = str(Path(app.config["DATA_DIR"] or app.instance_path).resolve())
    Path(app.config["DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    app.config["SECRET_KEY"] = app.config["SECRET_KEY"] or _secret_key(app.config["DATA_DIR"])

    from . import (auth, clean_cli, cli, errors, learn, metrics, resources, views_admin,
                   views_classify, views_clean, views_jobs, views_label, views_main, views_media)

    metrics.init_app(app)
    resources.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    cli.init_app(app)
    clean_cli.init_app(app)
    app.register_blueprint(views_main.bp)
    app.register_blueprint(views_classify.bp)
    app.register_blueprint(views_admin.bp)
    app.register_blueprint(learn.bp)
    app.register_blueprint(views_jobs.bp)
    app.register_blueprint(views_media.bp)
    app.register_blueprint(views_label.bp)
    app.register_blueprint(views_clean.bp)
    return app
