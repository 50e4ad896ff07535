"""The lesson's "common training problems", read from a run's per-epoch metrics.

Lesson 2 teaches four readings of the table fastai prints after each epoch:

- validation loss explodes: the learning rate is too high; decrease it;
- training loss is above validation loss: the model is underfitting; train more epochs or use a
  higher learning rate;
- error rate falls and then rises again: the model is overfitting; get more data or train fewer
  epochs;
- otherwise: nothing to fix.

One reading comes before them all: a model whose error rate is no lower than always answering the
largest class has learned nothing, whatever its losses say.

`diagnose(history)` applies them to a list of epochs (dicts with train_loss, valid_loss and
error_rate, as training records them) and returns Findings: which rule fired, the numbers that
made it fire, and the lesson's advice; `diagnose_metrics(metrics)` does it for a version's
metrics.json. Pure functions: no fastai, no files.
"""
import math
from dataclasses import dataclass

# Validation loss "explodes" when the last epoch's is this many times the best one before it
# and worse than guessing (ln of the class count; 1.0 when the count is not known)...
EXPLODE_FACTOR = 5.0
# ...or this many times the loss of guessing every class equally (ln of the class count): a
# model that confidently wrong has left the region where the lesson's recipe works.
EXPLODE_VS_GUESSING = 10.0
# Error rate must rise by at least this much from its best to call it overfitting (one or two
# images of a small validation set going either way is noise, not a trend).
OVERFIT_RISE = 0.02
# Training loss must be above validation loss by this factor to call it underfitting: fastai's
# training loss is a running average over the epoch, taken with dropout and augmentation on, so a
# model that fits well can end a little above its validation loss...
UNDERFIT_RATIO = 1.1
# ...and the error rate must be above this: a model that gets (nearly) every validation image right
# has nothing left for more epochs to win, whatever the two losses say (0.05 against 0.01 at error
# rate 0.000 is noise, not underfitting).
UNDERFIT_MIN_ERROR = 0.01
# A model is no better than guessing when its final error rate is at most this far below always
# answering the largest validation class (or one validation image, if that is more): the error rate
# moves in whole images, and an image or two either way on a small set is noise, as for overfitting.
# The final epoch is judged, as that is the model served.
GUESSING_TOLERANCE = 0.02
# Error rates are whole images over the set's size: float rounding must not decide a tie.
FLOAT_SLACK = 1e-9


@dataclass
class Finding:
    """One rule's verdict: its name, a headline, the evidence, and the lesson's advice."""

    rule: str  # lr_too_high, no_better_than_guessing, underfitting, overfitting, none, no_history
    title: str
    evidence: str
    advice: str

    @property
    def ok(self):
        """Tell whether this finding says nothing needs fixing."""
        return self.rule in ("none", "no_history")


def _finite(x):
    return x is not None and math.isfinite(x)


def valid_loss_exploded(history, n_classes=None):
    """Return the evidence that validation loss exploded by the end of the run, or None.

    The run is judged by where it ends: an early spike that training recovered from (common
    in the first epoch from scratch, before BatchNorm's statistics settle) leaves a good model.
    """
    losses = [(i, e.get("valid_loss")) for i, e in enumerate(history)
              if e.get("valid_loss") is not None]
    if not losses:
        return None
    for i, loss in losses:
        if not math.isfinite(loss):
            return f"validation loss became {loss} in epoch {i}"
    last_i, last = losses[-1]
    earlier = [loss for _, loss in losses[:-1]]
    guessing = math.log(n_classes) if n_classes and n_classes > 1 else 1.0
    # Worse than guessing as well: 0.0002 -> 0.04 is a ratio of 160 but still a very good model.
    if earlier and last > EXPLODE_FACTOR * min(earlier) and last > guessing:
        return (f"validation loss ended at {last:.4g} in epoch {last_i}, "
                f"{last / min(earlier):.0f}× its best ({min(earlier):.4g})")
    if n_classes and n_classes > 1 and last > EXPLODE_VS_GUESSING * guessing:
        return (f"validation loss ended at {last:.4g}, far above the {guessing:.2f} "
                f"of guessing among {n_classes} classes")
    return None


def no_better_than_guessing(history, n_classes=None, valid_counts=None):
    """Return the evidence that the final error rate is no better than always answering the
    largest validation class (equal classes assumed when the counts are not known), or None."""
    err = history[-1].get("error_rate")
    if not _finite(err):
        return None
    total = sum(valid_counts.values()) if valid_counts else 0
    if total and len(valid_counts) > 1:
        largest = max(sorted(valid_counts), key=valid_counts.get)
        baseline = 1 - valid_counts[largest] / total
        if err < baseline - max(GUESSING_TOLERANCE, 1 / total) - FLOAT_SLACK:
            return None
        return (f"error rate {err:.3f} on {total} validation images; always answering "
                f"'{largest}' (the largest class, {valid_counts[largest]} of {total}) "
                f"would give {baseline:.3f}")
    if not n_classes or n_classes < 2:
        return None
    baseline = 1 - 1 / n_classes
    if err < baseline - GUESSING_TOLERANCE - FLOAT_SLACK:
        return None
    return (f"error rate {err:.3f}; guessing among {n_classes} classes would give {baseline:.3f} "
            "(this version did not record its validation class counts, so equal classes are "
            "assumed)")


def underfitting(history):
    """Return the evidence that training loss ended clearly above validation loss, or None."""
    last = history[-1]
    train, valid = last.get("train_loss"), last.get("valid_loss")
    err = last.get("error_rate")
    if _finite(err) and err <= UNDERFIT_MIN_ERROR:
        return None
    if _finite(train) and _finite(valid) and train > valid * UNDERFIT_RATIO:
        return (f"in the last epoch training loss ({train:.4f}) is above "
                f"validation loss ({valid:.4f})")
    return None


def error_rate_turned(history):
    """Return the evidence that error rate fell and then rose again, or None."""
    rates = [e.get("error_rate") for e in history]
    rates = [(i, r) for i, r in enumerate(rates) if _finite(r)]
    if len(rates) < 3:
        return None
    best_i, best = min(rates, key=lambda ir: (ir[1], ir[0]))
    first, last = rates[0][1], rates[-1][1]
    if best < first and best_i < rates[-1][0] and last - best >= OVERFIT_RISE:
        return (f"error rate fell from {first:.3f} to {best:.3f} (epoch {best_i}) "
                f"and rose again to {last:.3f} in the last epoch")
    return None


RULES = {
    "lr_too_high": ("Learning rate too high",
                    "Decrease the learning rate (try the lr_find suggestion, or ten times lower) "
                    "and train again."),
    "no_better_than_guessing": ("No better than guessing",
                                "Train with a higher learning rate or for more epochs, start from "
                                "pretrained weights when they are available, or check the labels."),
    "underfitting": ("Underfitting",
                     "Train for more epochs, or with a higher learning rate."),
    "overfitting": ("Overfitting",
                    "Get more data (or more varied data), or train for fewer epochs."),
}


# When the loss exploded, that is why the model guesses: raising the rate would make it worse.
AFTER_EXPLOSION = ("Fix the learning rate first; if it still guesses, train for more epochs, start "
                   "from pretrained weights when they are available, or check the labels.")


def diagnose(history, n_classes=None, valid_counts=None):
    """Return the findings for a run's epochs; a single "none" finding when no rule fires.

    `valid_counts` ({class: validation images}) sets the majority-class baseline. An exploding
    validation loss, or a model no better than guessing, makes the fit readings meaningless: each
    is reported without them, and together the cause (the learning rate) comes first.
    """
    if not history:
        return [Finding("no_history", "No epochs recorded",
                        "this version has no per-epoch metrics (it was imported, not trained here)",
                        "Nothing to read; compare versions by their error rate instead.")]
    exploded = valid_loss_exploded(history, n_classes)
    guessing = no_better_than_guessing(history, n_classes, valid_counts)
    if exploded or guessing:
        found = [Finding("lr_too_high", *_headline("lr_too_high", exploded))] if exploded else []
        if guessing:
            title, evidence, advice = _headline("no_better_than_guessing", guessing)
            found.append(Finding("no_better_than_guessing", title, evidence,
                                 AFTER_EXPLOSION if exploded else advice))
        return found
    found = [Finding(rule, *_headline(rule, evidence))
             for rule, evidence in (("underfitting", underfitting(history)),
                                    ("overfitting", error_rate_turned(history)))
             if evidence]
    if found:
        return found
    last = history[-1]
    return [Finding("none", "No training problem found",
                    _healthy_evidence(last, len(history)),
                    "Nothing to fix in the recipe; to do better, clean the data and retrain.")]


def diagnose_metrics(metrics):
    """Return the findings for a version's metrics.json."""
    classes = (metrics.get("provenance") or {}).get("classes") or metrics.get("classes") or []
    counts = valid_counts(metrics)
    return diagnose(metrics.get("history") or [], n_classes=len(classes or counts or []) or None,
                    valid_counts=counts)


def valid_counts(metrics):
    """Return {class: validation images} from a version's metrics, or None if not recorded."""
    counts = (metrics.get("provenance") or {}).get("counts")
    if counts:
        return {c: n["valid"] for c, n in counts.items()}
    conf = metrics.get("confusion")  # its rows are the validation images of each actual class
    if conf and conf.get("matrix"):
        return {c: sum(row) for c, row in zip(conf["classes"], conf["matrix"], strict=True)}
    return None


def summary_text(findings):
    """Return the findings as one paragraph for a job's message: the problems with their numbers
    and advice, or the healthy verdict alone."""
    problems = [f for f in findings if not f.ok]
    if not problems:
        return f"Diagnosis: {findings[0].title.lower()}."
    return "Diagnosis: " + " ".join(f"{f.title.lower()}: {f.evidence}. {f.advice}"
                                    for f in problems)


def _headline(rule, evidence):
    title, advice = RULES[rule]
    return title, evidence, advice


def _healthy_evidence(last, n_epochs):
    parts = [f"{n_epochs} epochs"]
    if _finite(last.get("train_loss")) and _finite(last.get("valid_loss")):
        parts.append(f"training loss {last['train_loss']:.4f} below validation loss "
                     f"{last['valid_loss']:.4f}")
    if _finite(last.get("error_rate")):
        parts.append(f"error rate {last['error_rate']:.3f} at the end, no rise after its best")
    return "; ".join(parts)
