"""Model versions: models/<version>/export.pkl, its recorded sha256, and models/ACTIVE.

A trained version is registered "pending" and becomes "ready" once its job has scored it; only a
ready version is listed by default or can be activated, so a run killed in between leaves
nothing servable behind (jobs/recovery.py forgets it).
"""
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from webapp.core import db, files
from webapp.core.files import file_sha256
from webapp.dataset.store import now

EXPORT = "export.pkl"
METRICS = "metrics.json"
ACTIVATIONS = "activations.jsonl"


class ModelError(RuntimeError):
    """A model version that cannot be used; the message says why."""


def models_dir(data_dir):
    """Return the models/ folder of a data dir."""
    return Path(data_dir) / "models"


def new_version_dir(data_dir):
    """Create and return an empty, unique models/<version>/ folder."""
    base = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    root = models_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ModelError("could not allocate a new model version")


PENDING, READY = "pending", "ready"


def record_version(data_dir, version_dir, metrics, source, arch=None, size=None, status=READY):
    """Hash export.pkl, write metrics.json and register the version in the store."""
    if status not in (PENDING, READY):
        raise ValueError(f"unknown version status {status!r}")
    version_dir = Path(version_dir)
    sha = file_sha256(version_dir / EXPORT)
    metrics = {**metrics, "version": version_dir.name, "export_sha256": sha, "source": source}
    files.write_atomic(version_dir / METRICS, json.dumps(metrics, indent=2))
    with db.session(data_dir) as conn:
        conn.execute(
            "INSERT INTO models(version, created, source, arch, size, sha256, metrics, status) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (version_dir.name, now(), source, arch, size, sha, json.dumps(metrics), status),
        )
    return version_dir.name


def update_metrics(data_dir, version, **changes):
    """Add to a version's recorded metrics, in metrics.json and the store; return them."""
    metrics = {**version_record(data_dir, version)["metrics"], **changes}
    files.write_atomic(models_dir(data_dir) / version / METRICS, json.dumps(metrics, indent=2))
    with db.session(data_dir) as conn:
        conn.execute("UPDATE models SET metrics = ? WHERE version = ?",
                     (json.dumps(metrics), version))
    return metrics


def mark_ready(data_dir, version):
    """Mark a pending version finished (exported, checked and scored): it may now be activated."""
    with db.session(data_dir) as conn:
        changed = conn.execute("UPDATE models SET status = ? WHERE version = ?",
                               (READY, version)).rowcount
    if not changed:
        raise ModelError(f"there is no model version {version!r}")


def versions(data_dir, include_pending=False):
    """Return the ready versions (and the pending ones if asked), newest first, as dicts."""
    where = "" if include_pending else f"WHERE status = '{READY}' "
    with db.session(data_dir) as conn:
        rows = conn.execute(f"SELECT * FROM models {where}"
                            "ORDER BY created DESC, version DESC").fetchall()
    return [{**dict(r), "metrics": json.loads(r["metrics"])} for r in rows]


def unregistered_dirs(data_dir):
    """Return the models/<version>/ folders that have no record (what a killed export left)."""
    root = models_dir(data_dir)
    if not root.is_dir():
        return []
    with db.session(data_dir) as conn:
        known = {r["version"] for r in conn.execute("SELECT version FROM models")}
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name not in known)


def version_record(data_dir, version):
    """Return one version's record, or raise ModelError."""
    with db.session(data_dir) as conn:
        row = conn.execute("SELECT * FROM models WHERE version = ?", (version,)).fetchone()
    if row is None:
        raise ModelError(f"there is no model version {version!r}")
    return {**dict(row), "metrics": json.loads(row["metrics"])}


def active_version(data_dir):
    """Return the active version id, or None when there is none."""
    try:
        return (models_dir(data_dir) / "ACTIVE").read_text().strip() or None
    except FileNotFoundError:
        return None


def activate(data_dir, version, actor="admin", kind="activate"):
    """Make `version` the active one by replacing models/ACTIVE atomically, and log it."""
    record = version_record(data_dir, version)  # refuses unknown versions
    if record["status"] != READY:
        raise ModelError(f"model {version} is not finished yet ({record['status']})")
    root = models_dir(data_dir)
    files.write_atomic(root / "ACTIVE", version + "\n")
    # One short line per activation, appended (O_APPEND): what roll back walks back through.
    line = json.dumps({"at": now(), "version": version, "actor": actor, "kind": kind})
    with open(root / ACTIVATIONS, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def activations(data_dir):
    """Return the activation log, oldest first: [{at, version, actor, kind}, ...]."""
    try:
        lines = (models_dir(data_dir) / ACTIVATIONS).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # a torn last line after a crash: skip it
            continue
    return out


def _served_stack(data_dir):
    """Return the versions as served one after another, each roll back undoing one step."""
    stack = []
    for entry in activations(data_dir):
        if entry.get("kind") == "rollback" and len(stack) >= 2 and stack[-2] == entry["version"]:
            stack.pop()
        elif not stack or stack[-1] != entry["version"]:
            stack.append(entry["version"])
    active = active_version(data_dir)
    if active and (not stack or stack[-1] != active):  # ACTIVE written by an older Winnow
        stack.append(active)
    return stack


def previous_version(data_dir):
    """Return the version a roll back would serve (the one served before the active), or None.

    Without a log of activations, it is the newest version made before the active one.
    """
    active = active_version(data_dir)
    if active is None:
        return None
    known = {v["version"] for v in versions(data_dir)}
    for version in reversed(_served_stack(data_dir)[:-1]):
        if version != active and version in known:
            return version
    older = [v["version"] for v in versions(data_dir)]
    if active in older:
        rest = older[older.index(active) + 1:]
        return rest[0] if rest else None
    return None


def roll_back(data_dir, actor="admin"):
    """Serve the previous version again; return it, or raise ModelError if there is none."""
    version = previous_version(data_dir)
    if version is None:
        raise ModelError("there is no earlier model version to roll back to")
    activate(data_dir, version, actor=actor, kind="rollback")
    return version


def forget_version(data_dir, version):
    """Remove a version that never served (a cancelled or failed run): its record and folder."""
    if version == active_version(data_dir):
        raise ModelError(f"model {version} is active; activate another one first")
    with db.session(data_dir) as conn:
        conn.execute("DELETE FROM models WHERE version = ?", (version,))
    shutil.rmtree(models_dir(data_dir) / version, ignore_errors=True)


def verified_export_path(data_dir, version):
    """Return the version's export.pkl after checking its sha256 against the record."""
    record = version_record(data_dir, version)
    path = models_dir(data_dir) / version / EXPORT
    if not path.is_file():
        raise ModelError(f"model {version}: {EXPORT} is missing")
    if file_sha256(path) != record["sha256"]:
        raise ModelError(
            f"model {version}: {EXPORT} does not match its recorded sha256; refusing to unpickle it"
        )
    return path


def load_learner_verified(data_dir, version):
    """Load a version's learner on the CPU, only if its file is the one recorded."""
    path = verified_export_path(data_dir, version)
    from fastai.learner import load_learner  # fastai is heavy: import only to load a model

    return load_learner(path, cpu=True)


def load_active(data_dir):
    """Return (version, learner) for the active version, or (None, None) if there is none."""
    version = active_version(data_dir)
    if version is None:
        return None, None
    return version, load_learner_verified(data_dir, version)
