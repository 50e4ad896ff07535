"""One training recipe: a model version and a cross-validation fold build and fit their learner
the same way, and a fold reuses the rates its version found instead of running lr_find."""
import ast
from pathlib import Path

import pytest
import torch

from webapp.cleaning import crossval, scoring
from webapp.model import lr_rules, recipe, training

WEBAPP = Path(__file__).resolve().parent.parent / "webapp"


def called_or_imported(tree):
    """Yield the name of every function a module calls and every name it imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        elif isinstance(node, ast.alias):
            yield node.name.rsplit(".", 1)[-1]


def test_the_recipe_is_written_once():
    """fastai's learner, DataLoaders and fit calls appear in recipe.py and nowhere else."""
    recipe_names = {"vision_learner", "ImageDataLoaders", "fit_one_cycle", "lr_find", "unfreeze",
                    "aug_transforms", "error_rate"}
    found = {}
    for path in WEBAPP.rglob("*.py"):
        for name in called_or_imported(ast.parse(path.read_text(encoding="utf-8"))):
            if name in recipe_names:
                found.setdefault(name, set()).add(path.relative_to(WEBAPP).as_posix())
    assert found == {name: {"model/recipe.py"} for name in recipe_names}


def learner_recipe(learn):
    """Return what a learner was built with: what the one build_learner decides."""
    return {"metrics": [m.name for m in learn.metrics],
            "item_tfms": [type(t).__name__ for t in learn.dls.after_item.fs],
            "batch_tfms": [type(t).__name__ for t in learn.dls.after_batch.fs],
            "size": learn.dls.one_batch()[0].shape[-1], "bs": learn.dls.bs,
            "device": str(learn.dls.device), "arch": learn.arch.__name__,
            "callbacks": sorted(type(cb).__name__ for cb in learn.cbs)}


@pytest.fixture
def spied(monkeypatch):
    """Record every learner build_learner makes and every fit_recipe run, then do them."""
    seen = {"built": [], "fits": []}
    build, fit = recipe.build_learner, recipe.fit_recipe

    def build_and_record(*args, **kwargs):
        learn = build(*args, **kwargs)
        seen["built"].append((learner_recipe(learn), kwargs))
        return learn

    def fit_and_record(learn, opts, *args, **kwargs):
        seen["fits"].append(opts)
        return fit(learn, opts, *args, **kwargs)

    monkeypatch.setattr(recipe, "build_learner", build_and_record)
    monkeypatch.setattr(recipe, "fit_recipe", fit_and_record)
    return seen


def test_a_fold_trains_with_its_versions_recipe_and_stops_when_asked(trained_copy, spied):
    data_dir, version, metrics = trained_copy
    heard = []

    def on_progress(done=None, total=None, phase=None, message=None, detail=None):
        heard.append({"done": done, "total": total, "phase": phase, "message": message})

    with pytest.raises(training.TrainingCancelled):
        crossval.cross_validate(data_dir, version, 2, on_progress=on_progress,
                                should_stop=lambda: len(heard) > 3, epochs=1)

    # The fold's learner came from the one build_learner, built as the version's is.
    [(fold, kwargs)] = spied["built"]
    assert "rows" in kwargs  # a fold's table, not cleaned.csv
    opts = crossval.fold_options(metrics)
    assert fold == learner_recipe(recipe.build_learner(data_dir, opts, pretrained=False))
    assert fold["metrics"] == ["error_rate"] and fold["size"] == metrics["size"] == 32
    assert "ProgressCallback" not in fold["callbacks"]
    # It ran the one recipe with the version's own rates: no lr_find.
    [fit] = spied["fits"]
    assert (fit.lr, list(fit.lr_unfrozen)) == (metrics["lr"], metrics["lr_unfrozen"])
    assert (fit.epochs, fit.fine_tune_epochs, fit.arch) == (1, 0, "resnet18")
    # Progress came in the job's own terms, and it stopped in the first fold.
    assert heard[0]["phase"] == "cross-validation: fold 1 of 2"
    assert [h["done"] for h in heard[1:]] == [1, 2, 3] and len({h["total"] for h in heard[1:]}) == 1
    assert scoring.load_cv_scores(data_dir, version) is None  # a stopped run stores nothing


def test_a_stop_before_the_first_fold_trains_nothing(trained_copy, spied):
    data_dir, version, _ = trained_copy
    with pytest.raises(training.TrainingCancelled):
        crossval.cross_validate(data_dir, version, 2, should_stop=lambda: True)
    assert spied["built"] == [] and spied["fits"] == []


def test_a_fold_reuses_the_versions_options_and_rates(trained_dir):
    _, _, metrics = trained_dir
    opts = crossval.fold_options(metrics)
    assert (opts.arch, opts.size, opts.bs, opts.seed) == ("resnet18", 32, 4, 42)
    assert (opts.epochs, opts.fine_tune_epochs) == (2, 2)
    assert opts.lr == metrics["lr"] and list(opts.lr_unfrozen) == metrics["lr_unfrozen"]
    assert opts.pretrained is False and opts.activate is False
    cheaper = crossval.fold_options(metrics, epochs=1)
    assert (cheaper.epochs, cheaper.fine_tune_epochs) == (1, 0)


def test_an_imported_version_without_options_folds_with_the_defaults():
    opts = recipe.TrainOptions.from_version({"arch": "resnet50", "size": None, "pretrained": None})
    d = recipe.TrainOptions()
    assert (opts.arch, opts.size, opts.epochs, opts.bs) == ("resnet50", d.size, d.epochs, d.bs)
    assert opts.lr == recipe.FALLBACK_LR and opts.lr_unfrozen == (opts.lr / 100, opts.lr / 5)


def test_job_parameters_become_checked_options_that_never_activate_themselves():
    opts = recipe.TrainOptions.from_params({"arch": "resnet18", "lr": None, "activate": True,
                                            "size": 64, "colour": "blue"})
    assert (opts.arch, opts.size, opts.lr, opts.activate) == ("resnet18", 64, None, False)
    assert opts.epochs == recipe.TrainOptions().epochs  # what is not given keeps its default
    with pytest.raises(recipe.TrainingRefused, match="at most 100 epochs"):
        recipe.TrainOptions.from_params({"epochs": 101})


def test_the_options_are_the_ones_training_has_always_offered():
    assert training.TrainOptions is recipe.TrainOptions
    assert training.build_learner is recipe.build_learner
    with pytest.raises(training.TrainingRefused, match="unfrozen learning rates"):
        training.TrainOptions(lr_unfrozen=(1e-3, 1e-4)).check()


@pytest.fixture
def spied_learner(trained_dir, tmp_path):
    """A fresh learner on the session's pictures whose lr_find and fit_one_cycle calls are
    recorded (with whether the body's first convolution trains), then run."""
    data_dir, _, _ = trained_dir
    opts = recipe.TrainOptions(arch="resnet18", size=32, epochs=1, fine_tune_epochs=1, bs=8)
    learn = recipe.build_learner(data_dir, opts, pretrained=False)
    learn.path = tmp_path  # lr_find's temporary weights
    conv = next(m for m in learn.model[0].modules() if isinstance(m, torch.nn.Conv2d))
    calls, fit, find = [], learn.fit_one_cycle, learn.lr_find

    def fit_and_record(n_epoch, lr_max, **kwargs):
        calls.append(("fit_one_cycle", n_epoch, lr_max, conv.weight.requires_grad))
        return fit(n_epoch, lr_max, **kwargs)

    def find_and_record(**kwargs):
        calls.append(("lr_find", kwargs))
        return find(**kwargs)

    learn.fit_one_cycle, learn.lr_find = fit_and_record, find_and_record
    return learn, opts, calls


def test_from_scratch_the_whole_network_trains_in_one_cycle(spied_learner):
    learn, opts, calls = spied_learner
    fit = recipe.fit_recipe(learn, opts, pretrained=False)
    [(_, found_with), (_, n_epoch, lr, body_trains)] = calls
    assert (n_epoch, body_trains) == (2, True)  # epochs + fine_tune_epochs; nothing frozen
    curve = fit.lr_find["from scratch"]
    assert lr == fit.lr == lr_rules.scratch_lr(curve["suggestions"]) and fit.lr_unfrozen == (lr, lr)
    assert found_with["stop_div"] is True  # it stops where the loss diverges
    assert found_with["num_it"] == curve["num_it"] == lr_rules.LR_FIND_MIN_ITERS
    assert [e["phase"] for e in fit.report.history] == ["from scratch", "from scratch"]
    assert list(fit.seconds) == ["lr_find", "from scratch"]
    assert fit.said.startswith("from scratch (no ImageNet weights): the whole network, 2 epochs")


def test_from_imagenet_weights_the_lessons_recipe_stays(spied_learner):
    learn, opts, calls = spied_learner
    fit = recipe.fit_recipe(learn, opts, pretrained=True)
    assert [c[0] for c in calls] == ["lr_find", "fit_one_cycle", "lr_find", "fit_one_cycle"]
    (_, first), (_, n1, lr1, body1), (_, second), (_, n2, lr2, body2) = calls
    assert (n1, lr1, body1) == (1, fit.lr, False)  # the body frozen
    lo, hi = fit.lr_unfrozen
    assert (n2, lr2, body2) == (1, slice(lo, hi), True)  # unfrozen, slice(lo, lr/5)
    assert hi == pytest.approx(fit.lr / 5) and lo <= hi / 10
    assert fit.lr == fit.lr_find["frozen"]["suggestions"]["valley"]
    # Two lr_finds share the budget, each at its floor here; both stop where the loss diverges.
    assert first["num_it"] == second["num_it"] == lr_rules.LR_FIND_MIN_ITERS
    assert first["stop_div"] and second["stop_div"]
    assert [e["phase"] for e in fit.report.history] == ["frozen", "unfrozen"]
    assert list(fit.seconds) == ["lr_find", "frozen", "unfrozen"]
    assert fit.said.startswith("the lesson's, from ImageNet weights: 1 epochs with the body frozen")


@pytest.mark.parametrize("images, finds, iters", [
    (200, 1, 16),  # 2 batches of 64 an epoch, 12 in the run: a quarter is 3, below the floor
    (537, 1, 16),  # 6 an epoch, 36 in the run: 9, still the floor
    (1500, 1, 27),  # 18 an epoch, 108 in the run: a quarter
    (1500, 2, 16),  # the lesson's two lr_finds share that quarter, each at least the floor
    (2000, 2, 19),
    (20000, 1, 100),  # never more than fastai's 100
])
def test_lr_find_takes_its_share_of_the_run(images, finds, iters):
    batches_per_epoch = int(images * 0.8) // 64  # the training split, full batches
    default = recipe.TrainOptions()
    assert lr_rules.lr_find_budget(batches_per_epoch, default, finds) == iters
    asked = recipe.TrainOptions(lr_find_iters=200)  # an admin's number is taken as it is
    assert lr_rules.lr_find_budget(batches_per_epoch, asked, finds) == 200


def test_a_short_lr_find_smooths_over_the_same_span_of_rates():
    assert lr_rules.smoothing(0.98, 100) == pytest.approx(0.98)  # fastai's own
    assert lr_rules.smoothing(0.98, 20) == pytest.approx(0.9)
    lrs = [1e-7 * 10 ** (8 * i / 20) for i in range(20)]
    losses = [2.0 - i / 20 for i in range(20)]  # still falling when the budget ran out
    found = lr_rules.suggest(lrs, losses, 20)
    # Trimmed in proportion, as fastai trims 100 iterations: the first tenth and the last
    # twentieth (one point here, not fastai's fixed five).
    assert found["minimum"] == pytest.approx(lrs[18] / 10)


@pytest.mark.parametrize("n_train, pretrained, bs", [
    (426, True, 64),  # from ImageNet weights the lesson's 64 stand
    (426, False, 16),  # from scratch halved until an epoch has 16 steps: 26 of 16
    (720, False, 32),
    (1600, False, 64),  # 25 steps of 64 already
    (160, False, 8),  # never below 8
    (40, True, 40),  # never more than the training split
])
def test_from_scratch_batches_are_small_enough_for_steps(n_train, pretrained, bs):
    assert recipe.batch_size(64, n_train, pretrained) == bs


@pytest.mark.parametrize("suggestions, rate", [
    ({"valley": 5e-4, "minimum": 2e-2}, 3e-3),  # the valley is too low from scratch: the floor
    ({"valley": 8e-3, "minimum": 2e-2}, 8e-3),  # above the floor the valley stands
    ({"valley": None, "minimum": None}, 3e-3),  # lr_find found nothing: the floor
])
def test_from_scratch_the_rate_is_lr_finds_valley_raised_to_a_floor(suggestions, rate):
    assert lr_rules.scratch_lr(suggestions) == pytest.approx(rate)
