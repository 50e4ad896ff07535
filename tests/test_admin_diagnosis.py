"""The lesson's training problems, read from per-epoch metrics: each rule fires on its own case."""
import math

import pytest

from webapp.model.diagnosis import diagnose


def epochs(*rows):
    """Build a history from (train_loss, valid_loss, error_rate) rows."""
    return [{"epoch": i, "train_loss": t, "valid_loss": v, "error_rate": e}
            for i, (t, v, e) in enumerate(rows)]


HEALTHY = epochs((0.90, 1.00, 0.30), (0.50, 0.60, 0.20), (0.30, 0.45, 0.12), (0.20, 0.40, 0.10))
# Lesson 2, learning rate 0.5: the validation loss goes through the roof.
LR_TOO_HIGH = epochs((0.90, 0.70, 0.30), (3.10, 9.80, 0.55), (8.70, 145.0, 0.62))
ONE_EPOCH_AT_LR_HALF = epochs((12.2, 6.6e7, 0.50))
# Lesson 2, one epoch at a tiny rate: training loss stays above validation loss.
UNDERFITTING = epochs((1.40, 1.10, 0.45), (1.20, 0.95, 0.40))
# Error rate improves, then gets worse again while training loss keeps falling.
OVERFITTING = epochs((0.80, 0.90, 0.30), (0.40, 0.55, 0.12), (0.15, 0.62, 0.16), (0.05, 0.80, 0.21))

CASES = {"none": HEALTHY, "lr_too_high": LR_TOO_HIGH, "underfitting": UNDERFITTING,
         "overfitting": OVERFITTING}


@pytest.mark.parametrize("expected", list(CASES))
def test_each_rule_fires_on_its_case_and_no_other_does(expected):
    findings = diagnose(CASES[expected], n_classes=2)
    assert [f.rule for f in findings] == [expected]


def test_a_learning_rate_far_too_high_shows_in_a_single_epoch():
    (finding,) = diagnose(ONE_EPOCH_AT_LR_HALF, n_classes=2)
    assert finding.rule == "lr_too_high"
    assert "far above the 0.69 of guessing among 2 classes" in finding.evidence
    assert "Decrease the learning rate" in finding.advice


def test_a_nan_validation_loss_is_an_explosion():
    history = epochs((0.9, 0.7, 0.3), (5.0, math.nan, 0.5))
    assert [f.rule for f in diagnose(history)] == ["lr_too_high"]


def test_an_early_spike_training_recovered_from_is_not_an_explosion():
    # From scratch, the first epoch's validation loss can be huge before BatchNorm settles.
    history = epochs((1.50, 21.3, 0.36), (1.00, 0.60, 0.20), (0.40, 0.45, 0.10))
    assert [f.rule for f in diagnose(history, n_classes=2)] == ["none"]


def test_a_tiny_loss_growing_a_lot_but_staying_tiny_is_not_an_explosion():
    # A real run: near-perfect, then still near-perfect; the ratio alone would call it exploding.
    history = epochs((0.23, 0.000237, 0.0), (0.52, 0.038469, 0.0))
    assert "lr_too_high" not in [f.rule for f in diagnose(history, n_classes=2)]


def test_findings_say_what_fired_with_the_numbers_and_the_lessons_advice():
    (under,) = diagnose(UNDERFITTING)
    assert under.title == "Underfitting"
    assert under.evidence == ("in the last epoch training loss (1.2000) is above "
                              "validation loss (0.9500)")
    assert under.advice == "Train for more epochs, or with a higher learning rate."
    (over,) = diagnose(OVERFITTING)
    assert over.evidence == ("error rate fell from 0.300 to 0.120 (epoch 1) "
                             "and rose again to 0.210 in the last epoch")
    assert "more data" in over.advice and "fewer epochs" in over.advice
    (fine,) = diagnose(HEALTHY)
    assert fine.ok and "error rate 0.100" in fine.evidence


def test_a_one_image_wobble_in_error_rate_is_not_overfitting():
    history = epochs((0.8, 0.9, 0.30), (0.4, 0.5, 0.10), (0.3, 0.45, 0.11))
    assert [f.rule for f in diagnose(history)] == ["none"]


def test_underfitting_and_overfitting_can_both_be_read_from_one_run():
    history = epochs((1.0, 0.9, 0.30), (0.9, 0.7, 0.10), (0.95, 0.8, 0.20))
    assert [f.rule for f in diagnose(history)] == ["underfitting", "overfitting"]


def test_an_imported_model_without_epochs_has_nothing_to_read():
    (finding,) = diagnose([])
    assert finding.rule == "no_history" and finding.ok
