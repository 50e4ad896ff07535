"""Terminal commands: flask --app wsgi backup DEST | restore SRC, with a progress bar per phase."""
import click
from flask import current_app
from flask.cli import with_appcontext

from webapp.dataset import backup


class PhaseBars:
    """An on_progress callback that draws one click progress bar per phase."""

    def __init__(self):
        self.phase, self.bar = None, None

    def __call__(self, done, total, phase=None, message=None, detail=None):
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = click.progressbar(length=max(total, 1), label=(phase or "").ljust(10),
                                         show_pos=True)
            self.bar.render_progress()
        if done > self.bar.pos:
            self.bar.update(done - self.bar.pos)

    def close(self):
        """End the current bar's line."""
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None


def _run(work, *args):
    """Run a backup or restore with progress bars; a refusal ends the command with its reason."""
    bars = PhaseBars()
    try:
        return work(*args, on_progress=bars)
    except backup.BackupError as e:
        raise click.ClickException(str(e)) from e
    finally:
        bars.close()


def _summary(manifest):
    counts = manifest["counts"]
    return (f"{counts['images']} images ({counts['labeled']} labeled), {counts['trashed']} in "
            f"the trash, {counts['classes']} classes, {counts['events']} events, "
            f"{counts['models']} model versions (active: {counts['active_version'] or 'none'})")


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False))
@with_appcontext
def backup_command(dest):
    """Copy the data directory to DEST (new or empty) while the app keeps serving."""
    manifest = _run(backup.backup, current_app.config["DATA_DIR"], dest)
    click.echo(f"backed up {_summary(manifest)} to {dest}")
    if manifest["counts"]["secret_key"]:
        click.echo("the secret key is included (mode 0600): keep the backup private")
    click.echo("not included: " + "; ".join(manifest["skipped"]))
    for problem in manifest["problems"]:
        click.echo(f"warning: {problem}")
    for missing in manifest["missing"]:
        click.echo(f"missing: {missing}")
    if manifest["missing"]:
        raise click.ClickException(f"{len(manifest['missing'])} live images are missing from "
                                   "the data directory, so from the backup too")


@click.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@with_appcontext
def restore_command(src):
    """Restore a backup made by `backup` into this app's data directory, which must be new."""
    manifest = _run(backup.restore, src, current_app.config["DATA_DIR"])
    click.echo(f"restored {_summary(manifest)} from the backup of {manifest['created']}")


def init_app(app):
    """Register the commands."""
    app.cli.add_command(backup_command)
    app.cli.add_command(restore_command)
