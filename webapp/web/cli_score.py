"""Terminal command for the cleaner: flask --app wsgi score (rescore, optionally cross-validate)."""
import click
from flask.cli import with_appcontext

from webapp.cleaning import crossval
from webapp.web.terminal import run_in_terminal


@click.command("score")
@click.option("--version", default=None,
              help="Model version to score with (default: the active one).")
@click.option("--cv-folds", default=0, show_default=True,
              help=f"Also cross-validate the training images with this many folds "
                   f"({crossval.MIN_FOLDS}-{crossval.MAX_FOLDS}; about k-1 times the version's "
                   "training time).")
@click.option("--cv-epochs", default=None, type=int,
              help="Epochs per fold, in one cycle (default: the version's own recipe).")
@click.option("--batch-size", default=64, show_default=True)
@with_appcontext
def score_command(version, cv_folds, cv_epochs, batch_size):
    """Score every labeled image for the cleaner (the same job as the page's Rescore button)."""
    if cv_folds and not crossval.MIN_FOLDS <= cv_folds <= crossval.MAX_FOLDS:
        raise click.ClickException(
            f"--cv-folds must be 0 or {crossval.MIN_FOLDS} to {crossval.MAX_FOLDS}")
    run_in_terminal("score", {"version": version, "cv_folds": cv_folds, "cv_epochs": cv_epochs,
                              "batch_size": batch_size}, "scoring")


def init_app(app):
    """Register the command."""
    app.cli.add_command(score_command)
