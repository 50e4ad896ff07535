"""The lesson's training problems, read from per-epoch metrics: each rule fires on its own case,
and the report, the admin page and the training summary say what fired."""
import math

import pytest

from webapp.jobs import train as train_job
from webapp.model import registry
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
# Two classes, and half the validation images wrong at the end: the losses look unremarkable.
GUESSING = epochs((0.75, 0.70, 0.52), (0.70, 0.71, 0.50))

CASES = {"none": HEALTHY, "lr_too_high": LR_TOO_HIGH, "underfitting": UNDERFITTING,
         "overfitting": OVERFITTING, "no_better_than_guessing": GUESSING}


@pytest.mark.parametrize("expected", list(CASES))
def test_each_rule_fires_on_its_case_and_no_other_does(expected):
    findings = diagnose(CASES[expected], n_classes=2)
    # The lesson's exploding run also ends with more than half its images wrong: the cause first.
    also = ["no_better_than_guessing"] if expected == "lr_too_high" else []
    assert [f.rule for f in findings] == [expected, *also]


def test_a_learning_rate_far_too_high_shows_in_a_single_epoch():
    finding, guessing = diagnose(ONE_EPOCH_AT_LR_HALF, n_classes=2)
    assert finding.rule == "lr_too_high"
    assert "far above the 0.69 of guessing among 2 classes" in finding.evidence
    assert "Decrease the learning rate" in finding.advice
    # The useless model is named too, without the usual advice to raise the rate.
    assert guessing.rule == "no_better_than_guessing"
    assert guessing.advice.startswith("Fix the learning rate first")
    assert "higher learning rate" not in guessing.advice


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


# ---- where findings show: the report, the admin page, the training summary -----------------

# Digits, 3 classes, from scratch: every validation image came out "two" (error rate 0.708).
USELESS_METRICS = {
    "history": epochs((1.10, 1.12, 0.708), (1.09, 1.10, 0.708), (1.08, 1.10, 0.708)),
    "error_rate": 85 / 120, "images": 600, "seconds": 42.0, "pretrained": False,
    "provenance": {"classes": ["one", "three", "two"],
                   "counts": {"one": {"train": 160, "valid": 42},
                              "three": {"train": 160, "valid": 43},
                              "two": {"train": 160, "valid": 35}}},
}
HEALTHY_METRICS = {**USELESS_METRICS, "history": HEALTHY, "error_rate": 0.10}


def record_active(app, metrics):
    """Register a version with these metrics (and a stand-in export.pkl) and make it active."""
    data_dir = app.config["DATA_DIR"]
    version_dir = registry.new_version_dir(data_dir)
    (version_dir / registry.EXPORT).write_bytes(b"a stand-in: never loaded here")
    version = registry.record_version(data_dir, version_dir, metrics, "trained",
                                      arch="resnet18", size=64)
    registry.activate(data_dir, version)
    return version


def test_the_report_and_the_admin_page_call_a_useless_model_no_better_than_guessing(app, admin):
    version = record_active(app, USELESS_METRICS)
    for page in (f"/admin/models/{version}", "/admin/"):
        html = admin.client.get(page).get_data(as_text=True)
        assert 'data-rule="no_better_than_guessing"' in html, page
        assert "<h3>No better than guessing</h3>" in html
        assert "error rate 0.708 on 120 validation images" in html
        assert "(the largest class, 43 of 120) would give 0.642" in html
        assert "check the labels" in html
        assert "No training problem found" not in html
    assert f"The active model, <a href=\"/admin/models/{version}\">" in html


def test_the_admin_page_says_nothing_of_a_healthy_active_model(app, admin):
    record_active(app, HEALTHY_METRICS)
    html = admin.client.get("/admin/").get_data(as_text=True)
    assert "has a problem" not in html and 'class="finding' not in html


def test_the_training_summary_the_cli_prints_gives_the_numbers_and_the_advice():
    out = train_job.summary("20260101-000000", USELESS_METRICS, {"images": 600}, True)
    assert out["diagnosis"] == ["no_better_than_guessing"]
    assert out["message"] == (
        "Model 20260101-000000: error rate 0.708 after 3 epochs in 42 s; scored 600 images; "
        "now active. Diagnosis: no better than guessing: error rate 0.708 on 120 validation "
        "images; always answering 'three' (the largest class, 43 of 120) would give 0.642. "
        "Train with a higher learning rate or for more epochs, start from pretrained weights "
        "when they are available, or check the labels.")
    healthy = train_job.summary("v", HEALTHY_METRICS, {"images": 600}, False)
    assert healthy["message"].endswith("not activated. Diagnosis: no training problem found.")
