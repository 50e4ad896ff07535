"""What a training run records as it goes, as fastai callbacks see it: each epoch's metrics,
the smoothed loss per batch, progress per batch, a stop when asked; then the confusion matrix."""
import time


def report_callback(on_progress, should_stop):
    """Return a fastai callback that records epochs and the loss curve, reports batch progress,
    and stops the fit (CancelFitException: fastai's clean way out) when `should_stop()` says so.

    Its `phase` names what runs ("lr_find" or a stage of the fit); `lr_find_iters` is the running
    lr_find's budget, which its progress counts against."""
    from fastai.callback.core import Callback, CancelFitException

    class Report(Callback):
        order = 70  # after Recorder, so its log for the epoch is complete

        def __init__(self):
            self.phase, self.history, self.started, self.lr_find_iters = "", [], None, 0
            self.curve = {"iter": [], "loss": []}  # smoothed train loss per batch, both stages
            self.stopped = False

        def before_epoch(self):
            self.started = time.monotonic()

        def after_batch(self):
            if not self.training:
                return
            loss = float(self.smooth_loss)
            if self.phase == "lr_find":
                where = dict(epoch=0, n_epochs=1, batch=self.train_iter,
                             n_batches=self.lr_find_iters)
            else:
                self.curve["iter"].append(len(self.curve["iter"]) + 1)
                self.curve["loss"].append(loss)
                where = dict(epoch=self.epoch, n_epochs=self.n_epoch, batch=self.iter + 1,
                             n_batches=self.n_iter)
            if on_progress:
                on_progress(phase=self.phase, loss=loss, last_epoch=self.last_epoch, **where)
            if should_stop and should_stop():
                self.stopped = True
                raise CancelFitException()

        def after_epoch(self):
            if self.phase == "lr_find":
                return
            names = self.recorder.metric_names[1:-1]  # drop "epoch" and "time"
            # The log can be short of a metric (validation skipped): record what there is.
            values = dict(zip(names, self.recorder.log[1:len(names) + 1], strict=False))
            self.history.append({"phase": self.phase, "epoch": len(self.history),
                                 **{k: _num(v) for k, v in values.items()},
                                 "seconds": round(time.monotonic() - self.started, 2),
                                 "iter": len(self.curve["iter"])})

        @property
        def last_epoch(self):
            return self.history[-1] if self.history else None

    return Report()


def confusion(learn):
    """Return the validation set's confusion matrix and its most-confused pairs, as
    ClassificationInterpretation gives them, without keeping every input in memory."""
    preds, targs = learn.get_preds(dl=learn.dls.valid)
    vocab = [str(v) for v in learn.dls.vocab]
    matrix = [[0] * len(vocab) for _ in vocab]
    for actual, predicted in zip(targs.tolist(), preds.argmax(dim=1).tolist(), strict=True):
        matrix[actual][predicted] += 1
    pairs = [[vocab[a], vocab[p], matrix[a][p]] for a in range(len(vocab))
             for p in range(len(vocab)) if a != p and matrix[a][p]]
    pairs.sort(key=lambda pair: -pair[2])
    return {"classes": vocab, "matrix": matrix}, pairs


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
