"""One training recipe: a model version and a cross-validation fold build and fit their learner
the same way, and a fold reuses the rates its version found instead of running lr_find."""
import ast
from pathlib import Path

import pytest

from webapp.cleaning import crossval, scoring
from webapp.model import recipe, training

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
