"""Jobs in the terminal: the CLI runs the same job code as the pages, with a bar per phase."""
import click
from flask import current_app

from webapp.jobs import runner as jobs


def run_in_terminal(kind, params, name):
    """Run a job here, the same job the admin pages start, with a bar per phase; return it.

    A refused start or a job that does not succeed ends the command with its message.
    """
    bars = TerminalProgress()
    try:
        job = jobs.run_here(current_app.config["DATA_DIR"], kind, params, on_update=bars.update)
    except jobs.JobRefused as e:
        raise click.ClickException(str(e)) from e
    finally:
        bars.close()
    if job["status"] != "succeeded":
        raise click.ClickException(f"{name} {job['status']} (job #{job['id']}): {job['message']}")
    click.echo(job["message"])
    return job


class TerminalProgress:
    """For the CLI: a progress bar per phase and epoch, and each epoch's numbers as it ends."""

    def __init__(self):
        self.key, self.bar, self.epochs_shown = None, None, -1

    def update(self, status):
        d = status.get("detail") or {}
        phase = status.get("phase")
        per_epoch = phase in ("frozen", "unfrozen", "from scratch", "lr_find") and "batch" in d
        done, total = (map(int, d["batch"].split("/")) if per_epoch
                       else (status["done"], status["total"]))
        key = (phase, d.get("epoch") if per_epoch else None)
        if key != self.key:
            self.close()
            self.key = key
            self._epoch_row(d)
        if self.bar is None and total:
            label = f"{phase} {'epoch ' + d['epoch'] if phase != 'lr_find' and per_epoch else ''}"
            self.bar = click.progressbar(length=total, label=label.strip().ljust(20),
                                         show_pos=True)
            self.bar.render_progress()
        if self.bar is not None and done > self.bar.pos:
            self.bar.update(done - self.bar.pos)

    def _epoch_row(self, d):
        if d.get("last_epoch", -1) > self.epochs_shown:
            self.epochs_shown = d["last_epoch"]
            click.echo(f"  epoch {d['last_epoch']}: train_loss {d['last_train_loss']:.6f}  "
                       f"valid_loss {d['last_valid_loss']:.6f}  "
                       f"error_rate {d.get('last_error_rate', float('nan')):.6f}")

    def close(self):
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None
