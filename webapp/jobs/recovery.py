"""Take away what a killed training run left: its pending version, its half-written folder, tmp/.

A killed notebook import is swept the same way: its job makes the version folder too.

A train job registers its version "pending" and marks it ready only once it is scored, so a run
killed in between (SIGKILL, out of memory, a power cut) leaves a version nobody may serve. The
reaper calls `sweep_training` after it has marked dead jobs finished, and the app calls it (via
the reaper) at start-up; a train job calls it before it starts, for runs reaped by `create`.
"""
import shutil
from datetime import UTC, datetime

from webapp.core import db
from webapp.model import registry, training

MAKERS = ("train", "import")  # the job kinds that make version folders
SLACK_SECONDS = 2  # a folder's name has whole seconds; the job's times do not


def sweep_training(data_dir, own_job=None):
    """Forget pending versions and unregistered folders of dead train runs; return their names.

    Does nothing while a train or import job (other than `own_job`) is queued or running: what
    it has made so far is its own.
    """
    with db.session(data_dir) as conn:
        busy = conn.execute(f"SELECT 1 FROM jobs WHERE kind IN {MAKERS} AND id IS NOT ? "
                            "AND status IN ('queued', 'running')", (own_job,)).fetchone()
        if busy:
            return []
        pending = [r["version"] for r in conn.execute(
            "SELECT version FROM models WHERE status = ?", (registry.PENDING,))]
        dead = conn.execute(f"SELECT started, finished FROM jobs WHERE kind IN {MAKERS} "
                            "AND status IN ('failed', 'cancelled') AND started IS NOT NULL "
                            "ORDER BY id DESC LIMIT 20").fetchall()
    for version in pending:
        registry.forget_version(data_dir, version)
    # A folder with no record is a killed export only if a dead train or import run was making
    # it when it was made: any other folder is spared.
    orphans = [p for p in registry.unregistered_dirs(data_dir)
               if any(_made_during(p.name, r["started"], r["finished"]) for r in dead)]
    for path in orphans:
        shutil.rmtree(path, ignore_errors=True)
    training.sweep_work_dirs(data_dir)
    return pending + [p.name for p in orphans]


def _made_during(name, started, finished):
    """Tell whether a version folder's name (its UTC creation second) falls in a job's run."""
    try:
        made = datetime.strptime(name[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return False  # not a name new_version_dir gives: not ours to remove
    return started - SLACK_SECONDS <= made <= (finished or made) + SLACK_SECONDS
