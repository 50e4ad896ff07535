"""Before Start, the retrain form says what the run will cost, scaled from a run timed here."""
import pytest

from webapp.model import estimate
from webapp.model.training import TrainOptions

# Timed at 64 px on 80 training and 20 validation pictures: three epochs, the first slowed by
# warm-up, then 2 s each (2 s per 100 images per epoch); lr_find 3.2 s for 20 batches of 8.
TIMED = {
    "version": "20261127-101500", "source": "trained", "arch": "resnet18", "size": 64,
    "pretrained": False, "options": {"bs": 16},
    "provenance": {"counts": {"cat": {"train": 40, "valid": 10},
                              "dog": {"train": 40, "valid": 10}}},
    "history": [{"phase": "from scratch", "seconds": s} for s in (9.0, 2.0, 2.0)],
    "lr_find": {"from scratch": {"num_it": 20, "ran": 20}},
    "phase_seconds": {"setup": 4.0, "lr_find": 3.2, "from scratch": 13.0, "export": 2.0,
                      "scoring": 1.0},
}
TWICE_AS_MANY = {"cat": {"train": 80, "valid": 20}, "dog": {"train": 80, "valid": 20}}


def scratch(**change):
    return TrainOptions(**{"arch": "resnet18", "size": 128, "epochs": 2, "fine_tune_epochs": 1,
                           "bs": 16, "pretrained": False, "lr_find_iters": 30, **change})


def seconds(e):
    return {p.name: p.seconds for p in e.phases}


def test_a_timed_runs_pace_is_scaled_by_size_and_images_and_its_basis_is_said():
    timed = estimate.timing(TIMED)
    e = estimate.estimate(scratch(), TWICE_AS_MANY, [timed], cached=False, offline=True)
    # (128/64)² = 4 times the pixels; 200 images where the timed run had 100.
    assert seconds(e) == pytest.approx({
        "lr_find": 30 * 8 * 0.02 * 4,  # 30 batches of 8 (from scratch: batches of 8 here)
        "from scratch": 3 * 200 * 0.02 * 4,  # both stages' epochs, at the median epoch's pace
        "setup and export": 4.0 + 2.0 * 4,
        "scoring": 200 * 0.01 * 4,
    })
    assert e.total == pytest.approx(19.2 + 48 + 12 + 8)
    assert e.as_json()["total"] == "about 1 min"
    assert e.basis.startswith("From your run 20261127-101500 (resnet18 at 64 px from scratch, "
                              "100 images): 2 s per 100 images per epoch (from scratch), lr_find "
                              "2 s per 100 images; scaled by (128/64)² for the size, 4× in all.")


def test_another_architecture_is_scaled_by_flops_and_the_basis_says_so():
    e = estimate.estimate(scratch(arch="resnet50", size=64), TWICE_AS_MANY,
                          [estimate.timing(TIMED)], cached=False, offline=True)
    flops = estimate.GFLOPS["resnet50"] / estimate.GFLOPS["resnet18"]
    assert seconds(e)["from scratch"] == pytest.approx(3 * 200 * 0.02 * flops)
    assert "2.3× for resnet50's FLOPs over resnet18's" in e.basis
    assert "no resnet50 run was timed here" in e.basis


def test_the_nearest_size_of_the_same_architecture_is_the_basis():
    runs = [estimate.timing({**TIMED, "version": v, "arch": arch, "size": size})
            for v, arch, size in (("a", "resnet34", 128), ("b", "resnet18", 224),
                                  ("c", "resnet18", 96), ("d", "resnet18", 32))]
    assert estimate.pick(runs, "resnet18", 128, pretrained=False).version == "c"
    assert estimate.pick(runs, "resnet34", 224, pretrained=False).version == "a"


def test_a_slow_lr_find_is_paced_as_training_batches():
    """lr_find runs first: a clock slowed by warm-up would be multiplied by the scaling."""
    slow = estimate.timing({**TIMED, "phase_seconds": {**TIMED["phase_seconds"], "lr_find": 60}})
    assert slow.lr_find == pytest.approx(1.5 * 0.02 * 100 / 80)
    assert "lr_find paced as 1.5 of its training batches (its own clock ran slower" in \
        estimate.estimate(scratch(), TWICE_AS_MANY, [slow], False, True).basis


def test_from_imagenet_weights_it_counts_two_lr_finds_and_both_stages():
    e = estimate.estimate(scratch(pretrained=None), TWICE_AS_MANY, [estimate.timing(TIMED)],
                          cached=True, offline=True)
    assert [p.name for p in e.phases] == ["lr_find", "frozen", "unfrozen", "setup and export",
                                          "scoring"]
    assert e.phases[0].detail == "2 runs of at most 30 batches of 16"
    assert "frozen epochs paced as that run's from scratch ones" in e.basis


def test_with_no_timed_run_it_says_there_is_no_estimate_yet():
    imported = {"source": "imported", "arch": "resnet34", "size": 224}  # a notebook's: untimed
    assert estimate.timing(imported) is None
    e = estimate.estimate(scratch(), TWICE_AS_MANY, [], cached=False, offline=True)
    assert e.phases == [] and e.total is None
    assert e.basis.startswith("No run has been timed on this machine yet")


@pytest.mark.parametrize("asked, cached, offline, pretrained, says, warning", [
    (None, False, True, False, "No ImageNet weights for resnet34 on this machine: this run "
                               "trains from scratch", True),
    (True, False, True, True, "with weights \"yes\" this run will fail", True),
    (None, True, True, True, "ImageNet weights for resnet34 are on this machine", False),
    (None, False, False, True, "the run downloads them first (about 83 MB); if it cannot, it "
                               "trains from scratch", False),
    (False, True, False, False, "No ImageNet weights, as chosen", False),
])
def test_the_form_says_whether_the_run_has_imagenet_weights(asked, cached, offline, pretrained,
                                                           says, warning):
    plan = estimate.weights_plan("resnet34", asked, cached, offline)
    assert plan[0] is pretrained and says in plan[1] and plan[2] is warning
