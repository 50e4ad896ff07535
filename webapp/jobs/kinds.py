"""The job kinds other than training, as thin adapters: a Job's parameters in, domain calls out.

Each runner unpacks `job.params`, opens what the job process needs (it has no Flask app, so the
store's settings come in the parameters), and hands the domain `job.progress` (which raises
Cancelled when an admin cancels) and `job.item` as its `on_progress` and `on_item` callbacks.
"""
from webapp.cleaning import crossval, scoring
from webapp.core import fetch
from webapp.dataset import unlabeled
from webapp.dataset.store import Dataset
from webapp.ingest import downloads, folders, uploads
from webapp.jobs import runner
from webapp.model import notebook_import, registry, serving, training


def _dataset(job):
    """Open the dataset a job's parameters describe."""
    return Dataset.from_config({**job.params["store"], "DATA_DIR": job.data_dir})


def _message(counts, line):
    return {**counts, "message": line.capitalize() + "."}


def download(job):
    """The "download" job: every URL fetched in parallel, stored, and reported as an item."""
    p = job.params
    dataset = _dataset(job)
    try:
        counts = downloads.download_into(
            dataset, p["urls"], fetch.Limits.from_settings(p["fetch"]), p.get("label"),
            p.get("workers"), p.get("actor", "admin"), on_progress=job.progress,
            on_item=job.item)
    finally:
        dataset.close()
    return _message(counts, downloads.summary(counts))


def upload(job):
    """The "upload" job: every staged file, or every entry of a staged zip, through the intake."""
    p = job.params
    dataset = _dataset(job)
    try:
        counts = uploads.import_staged(dataset, p["token"], p.get("label"), p["actor"],
                                       p["max_entries"], p["max_bytes"],
                                       on_progress=job.progress, on_item=job.item,
                                       label_map=p.get("label_map"))
    finally:
        dataset.close()
    return _message(counts, folders.counts_line(counts))


def suggest(job):
    """The "suggest" job: the active model's suggestion for every unlabeled image."""
    version = registry.active_version(job.data_dir)
    if version is None:
        raise RuntimeError("no model is active: train one or activate a version first")
    classifier = serving.load_served(job.data_dir, version)
    dataset = _dataset(job)
    try:
        n = unlabeled.suggest_all(dataset, classifier, on_progress=job.progress)
    finally:
        dataset.close()
    return {"version": version, "scored": n,
            "message": f"Model {version} suggested a class for {n} unlabeled images."}


def score(job):
    """The "score" job: rescore with a version (the active one by default), then cross-validate."""
    p = job.params
    version = p.get("version") or registry.active_version(job.data_dir)
    if not version:
        raise scoring.ScoringError("there is no active model to score with: train one first")
    folds = int(p.get("cv_folds") or 0)
    job.progress(0, None, phase="scoring", message=f"Scoring every labeled image with {version}")
    meta = scoring.score_version(job.data_dir, version, on_progress=job.progress,
                                 batch_size=int(p.get("batch_size") or 64),
                                 on_phase=lambda message: job.progress(message=message))
    message = (f"Scored {meta['images']} images with {version} "
               f"({meta['images_per_second']} images/s).")
    result = {"version": version, "scored": meta["images"], "failed": len(meta["failed"])}
    if folds >= 2:
        try:
            cv = crossval.cross_validate(job.data_dir, version, folds, on_progress=job.progress,
                                         should_stop=lambda: job.cancelled,
                                         epochs=p.get("cv_epochs"))
        except training.TrainingCancelled as e:  # noticed between folds: still a cancel
            raise runner.Cancelled(str(e)) from e
        message += (f" Cross-validated {cv['images']} training images with {folds} folds "
                    f"in {cv['seconds']:.0f} s.")
        result["cv"] = {"folds": folds, "images": cv["images"], "seconds": cv["seconds"]}
    return {**result, "message": message}


def import_model(job):
    """The "import" job: a staged notebook export.pkl checked, given a serving bundle, recorded."""
    p = job.params
    version, check, record = notebook_import.import_staged(
        job.data_dir, p["token"], p["filename"], p.get("actor", "admin"),
        on_progress=job.progress, log=job.log)
    return notebook_import.summary(version, check, record, p["filename"])

