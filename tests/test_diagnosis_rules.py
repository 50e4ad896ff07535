"""The diagnosis rules issue 15 added or tightened, each on constructed histories: a model no better
than guessing, and underfitting that is only noise between the two losses."""
import pytest

from tests.test_admin_diagnosis import HEALTHY, UNDERFITTING, epochs
from webapp.model.diagnosis import diagnose, diagnose_metrics, summary_text, valid_counts

# Digits, 3 classes, from scratch: every one of 120 validation images came out "two".
DIGITS = {"one": 42, "three": 43, "two": 35}
ALL_TWO = epochs((1.10, 1.12, 0.708), (1.09, 1.10, 85 / 120))


def rules(history, **kw):
    return [f.rule for f in diagnose(history, **kw)]


def test_a_model_answering_one_class_for_everything_is_no_better_than_guessing():
    (finding,) = diagnose(ALL_TWO, n_classes=3, valid_counts=DIGITS)
    assert finding.rule == "no_better_than_guessing" and not finding.ok
    assert finding.title == "No better than guessing"
    assert finding.evidence == ("error rate 0.708 on 120 validation images; always answering "
                                "'three' (the largest class, 43 of 120) would give 0.642")
    for advice in ("higher learning rate", "more epochs", "pretrained weights", "check the labels"):
        assert advice in finding.advice


@pytest.mark.parametrize(("wrong", "fires"), [
    (40, True),   # exactly always answering "a"
    (38, True),   # two images better: within 0.02 of it
    (37, False),  # three images better
    (55, True),   # worse than always answering "a"
])
def test_the_majority_baseline_allows_two_points_on_a_hundred_images(wrong, fires):
    history = epochs((0.60, 0.65, wrong / 100))
    assert (rules(history, n_classes=2, valid_counts={"a": 60, "b": 40})
            == ["no_better_than_guessing"]) is fires


@pytest.mark.parametrize(("wrong", "fires"), [(10, True), (9, True), (8, False)])
def test_on_a_small_validation_set_one_image_is_the_allowance(wrong, fires):
    history = epochs((0.60, 0.65, wrong / 20))
    assert ("no_better_than_guessing" in rules(history, valid_counts={"a": 10, "b": 10})) is fires


def test_without_class_counts_an_older_version_is_judged_against_equal_classes():
    (finding,) = diagnose(epochs((1.1, 1.1, 0.70)), n_classes=3)
    assert finding.rule == "no_better_than_guessing"
    assert finding.evidence == ("error rate 0.700; guessing among 3 classes would give 0.667 "
                                "(this version did not record its validation class counts, so "
                                "equal classes are assumed)")
    assert rules(epochs((0.9, 1.0, 0.60)), n_classes=3) == ["none"]
    assert rules(epochs((0.9, 1.0, 0.60))) == ["none"]  # nothing to compare with: no verdict


def test_a_useless_model_is_not_read_for_underfitting_or_overfitting():
    history = epochs((1.3, 1.0, 0.30), (1.2, 0.9, 0.20), (1.4, 1.0, 0.50))
    assert rules(history, n_classes=2) == ["no_better_than_guessing"]


def test_a_perfect_model_is_not_underfitting_because_of_noise_between_the_losses():
    # The demo model: error rate 0.000, its training loss a running average above the final one.
    history = epochs((0.60, 0.20, 0.05), (0.05, 0.01, 0.0))
    assert rules(history, n_classes=3, valid_counts={"day": 8, "night": 8, "sunset": 8}) == ["none"]


def test_a_training_loss_a_hair_above_validation_loss_is_not_underfitting():
    history = epochs((0.70, 0.60, 0.25), (0.52, 0.50, 0.15))
    assert rules(history, n_classes=2) == ["none"]


def test_a_genuinely_underfitting_run_still_is():
    assert rules(UNDERFITTING, n_classes=2, valid_counts={"a": 50, "b": 50}) == ["underfitting"]


def test_a_good_model_has_no_problem():
    (finding,) = diagnose(HEALTHY, n_classes=2, valid_counts={"a": 50, "b": 50})
    assert finding.rule == "none" and finding.ok


def test_the_validation_counts_come_from_the_provenance_then_the_confusion_matrix():
    provenance = {"provenance": {"classes": ["a", "b"], "counts": {"a": {"train": 9, "valid": 3},
                                                                   "b": {"train": 8, "valid": 2}}}}
    confusion = {"confusion": {"classes": ["a", "b"], "matrix": [[1, 2], [0, 2]]}}
    assert valid_counts(provenance) == {"a": 3, "b": 2} == valid_counts(confusion)
    assert valid_counts({"classes": ["a", "b"]}) is None


def test_a_versions_metrics_are_diagnosed_with_its_counts_or_equal_classes():
    counted = {"history": ALL_TWO, "provenance": {
        "classes": sorted(DIGITS), "counts": {c: {"train": 100, "valid": n}
                                              for c, n in DIGITS.items()}}}
    assert "43 of 120" in diagnose_metrics(counted)[0].evidence
    legacy = {"history": ALL_TWO, "classes": sorted(DIGITS)}
    assert "equal classes are assumed" in diagnose_metrics(legacy)[0].evidence
    assert diagnose_metrics({})[0].rule == "no_history"


def test_the_summary_gives_a_problems_numbers_and_advice_and_a_healthy_verdict_alone():
    assert summary_text(diagnose(HEALTHY)) == "Diagnosis: no training problem found."
    text = summary_text(diagnose(ALL_TWO, valid_counts=DIGITS))
    assert text.startswith("Diagnosis: no better than guessing: error rate 0.708 on 120 ")
    assert text.endswith("would give 0.642. Train with a higher learning rate or for more epochs, "
                         "start from pretrained weights when they are available, or check the "
                         "labels.")
