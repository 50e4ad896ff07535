"""The "train" job: the recipe on cleaned.csv, then scores for the cleaner, then serve it.

Phases as the progress bar shows them: lr_find, frozen, lr_find, unfrozen from ImageNet weights,
or lr_find, from scratch (epoch and batch, the latest losses beside the bar), then export and
scoring; metrics.json's phase_seconds records each one's seconds. The new version is registered
pending, marked ready once scored, and only then activated: a failure or a cancel anywhere leaves
the served model as it was and no new version behind, and so does a kill (jobs/recovery.py
sweeps it).
"""
import time

from webapp.cleaning import scoring
from webapp.dataset.store import Dataset
from webapp.jobs import recovery, runner as jobs
from webapp.model import diagnosis, registry, training


class Progress:
    """Turn training's per-batch callbacks into job progress, written a few times a second."""

    EVERY = 0.25  # seconds between writes within a phase

    def __init__(self, job):
        self.job, self.phase, self.written, self.stage = job, None, 0.0, None

    def __call__(self, phase, epoch, n_epochs, batch, n_batches, loss=None, last_epoch=None,
                 stage=None):
        new_phase = phase != self.phase or (phase == "lr_find" and batch == 0)
        now = time.monotonic()
        if not new_phase and batch < n_batches and now - self.written < self.EVERY:
            return
        self.written, self.phase, self.stage = now, phase, stage or self.stage
        try:
            self.job.progress(epoch * n_batches + batch, n_epochs * n_batches,
                              phase=phase if new_phase else None,
                              message=self.message(phase, epoch, n_epochs, batch, n_batches),
                              detail=self.detail(epoch, n_epochs, batch, n_batches, loss,
                                                 last_epoch))
        except jobs.Cancelled:
            pass  # training's should_stop sees it and stops fastai cleanly

    def message(self, phase, epoch, n_epochs, batch, n_batches):
        if phase == "lr_find":
            stage = "body frozen" if self.stage == "frozen" else self.stage
            return f"lr_find ({stage}): batch {batch} of at most {n_batches}"
        if phase == "export":
            return "Exporting export.pkl and model.onnx, and checking them"
        return f"{phase}: epoch {epoch + 1} of {n_epochs}, batch {batch} of {n_batches}"

    @staticmethod
    def detail(epoch, n_epochs, batch, n_batches, loss, last_epoch):
        out = {"epoch": f"{epoch + 1}/{n_epochs}", "batch": f"{batch}/{n_batches}"}
        if loss is not None:
            out["smooth_loss"] = round(loss, 4)
        return {**out, **last_epoch_detail(last_epoch)}


def last_epoch_detail(last_epoch):
    """Return the latest finished epoch's numbers for the progress detail."""
    if not last_epoch:
        return {}
    out = {"last_epoch": last_epoch["epoch"]}
    for key in ("train_loss", "valid_loss", "error_rate"):
        if last_epoch.get(key) is not None:
            out[f"last_{key}"] = round(last_epoch[key], 4)
    return out


def run_job(job):
    """Train a version, score every labeled image with it, then activate it (unless told not to)."""
    opts = training.TrainOptions.from_params(job.params)
    recovery.sweep_training(job.data_dir, own_job=job.id)  # a killed run reaped by runner.create
    # cleaned.csv from the store first: a job killed mid-import may have left it behind the store.
    dataset = Dataset(job.data_dir)
    try:
        dataset.write_cleaned_csv()
    finally:
        dataset.close()
    try:
        version, metrics = training.train(job.data_dir, opts, on_progress=Progress(job),
                                          log=job.log, should_stop=lambda: job.cancelled)
    except training.TrainingCancelled as e:
        raise jobs.Cancelled(str(e)) from e
    try:  # from here on the version exists: any failure or cancel must take it away again
        last_epoch = metrics["history"][-1] if metrics["history"] else None
        job.progress(0, None, phase="scoring",
                     message=f"Scoring every labeled image with {version} for the cleaner",
                     detail=last_epoch_detail(last_epoch))
        started = time.monotonic()
        scored = scoring.score_version(job.data_dir, version, on_progress=job.progress,
                                        on_phase=lambda message: job.progress(message=message))
        metrics = registry.update_metrics(job.data_dir, version, phase_seconds={
            **metrics["phase_seconds"], "scoring": round(time.monotonic() - started, 2)})
        registry.mark_ready(job.data_dir, version)
        activate = job.params.get("activate", True)
        if activate:
            registry.activate(job.data_dir, version, actor=f"training job #{job.id}")
    except BaseException:
        registry.forget_version(job.data_dir, version)
        raise
    return summary(version, metrics, scored, activate)


def summary(version, metrics, scored, activated):
    """Return the job's result: what it made, how good it is, and the lesson's reading of it."""
    findings = diagnosis.diagnose_metrics(metrics)
    err = metrics["error_rate"]
    lr_find = (metrics.get("phase_seconds") or {}).get("lr_find")
    message = (f"Model {version}: error rate {err:.3f} after {len(metrics['history'])} epochs "
               f"in {metrics['seconds']:.0f} s"
               + (f" ({lr_find:.0f} s of it lr_find)" if lr_find is not None else "")
               + f"; scored {scored['images']} images; "
               + ("now active. " if activated else "not activated. ")
               + diagnosis.summary_text(findings))
    return {"version": version, "error_rate": err, "activated": bool(activated),
            "scored": scored["images"], "diagnosis": [f.rule for f in findings],
            "message": message}
