"""The lesson's "common training problems", read from a run's per-epoch metrics.

Lesson 2 teaches four readings of the table fastai prints after each epoch:

- validation loss explodes: the learning rate is too high; decrease it;
- training loss is above validation loss: the model is underfitting; train more epochs or use a
  higher learning rate;
- error rate falls and then rises again: the model is overfitting; get more data or train fewer
  epochs;
- otherwise: nothing to fix.

`diagnose(history)` applies them to a list of epochs (dicts with train_loss, valid_loss and
error_rate, as training records them) and returns Findings: which rule fired, the numbers that
made it fire, and the lesson's advice. Pure functions: no fastai, no files.
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


@dataclass
class Finding:
    """One rule's verdict: its name, a headline, the evidence, and the lesson's advice."""

    rule: str  # lr_too_high, underfitting, overfitting, none, no_history
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


def underfitting(history):
    """Return the evidence that training loss ended above validation loss, or None."""
    last = history[-1]
    train, valid = last.get("train_loss"), last.get("valid_loss")
    if _finite(train) and _finite(valid) and train > valid:
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
    "underfitting": ("Underfitting",
                     "Train for more epochs, or with a higher learning rate."),
    "overfitting": ("Overfitting",
                    "Get more data (or more varied data), or train for fewer epochs."),
}


def diagnose(history, n_classes=None):
    """Return the findings for a run's epochs; a single "none" finding when no rule fires.

    An exploding validation loss makes the other readings meaningless, so it is reported alone.
    """
    if not history:
        return [Finding("no_history", "No epochs recorded",
                        "this version has no per-epoch metrics (it was imported, not trained here)",
                        "Nothing to read; compare versions by their error rate instead.")]
    exploded = valid_loss_exploded(history, n_classes)
    if exploded:
        return [Finding("lr_too_high", *_headline("lr_too_high", exploded))]
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
