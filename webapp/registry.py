"""Model versions: models/<version>/export.pkl, its recorded sha256, and models/ACTIVE."""
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from . import db
from .manifest import file_sha256
from .store import now

EXPORT = "export.pkl"
METRICS = "metrics.json"


class ModelError(RuntimeError):
    """A model version that cannot be used; the message says why."""


def models_dir(data_dir):
    """Return the models/ folder of a data dir."""
    return Path(data_dir) / "models"


def new_version_dir(data_dir):
    """Create and return an empty, unique models/<version>/ folder."""
    base = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
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


def record_version(data_dir, version_dir, metrics, source, arch=None, size=None):
    """Hash export.pkl, write metrics.json and register the version in the store."""
    version_dir = Path(version_dir)
    sha = file_sha256(version_dir / EXPORT)
    metrics = {**metrics, "version": version_dir.name, "export_sha256": sha, "source": source}
    (version_dir / METRICS).write_text(json.dumps(metrics, indent=2))
    with db.session(data_dir) as conn:
        conn.execute(
            "INSERT INTO models(version, created, source, arch, size, sha256, metrics) "
            "VALUES (?,?,?,?,?,?,?)",
            (version_dir.name, now(), source, arch, size, sha, json.dumps(metrics)),
        )
    return version_dir.name


def versions(data_dir):
    """Return every registered version, newest first, as dicts."""
    with db.session(data_dir) as conn:
        rows = conn.execute("SELECT * FROM models ORDER BY created DESC, version DESC").fetchall()
    return [{**dict(r), "metrics": json.loads(r["metrics"])} for r in rows]


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


def activate(data_dir, version):
    """Make `version` the active one by replacing models/ACTIVE atomically."""
    version_record(data_dir, version)  # refuses unknown versions
    root = models_dir(data_dir)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".ACTIVE-")
    with os.fdopen(fd, "w") as f:
        f.write(version + "\n")
    os.replace(tmp, root / "ACTIVE")


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
