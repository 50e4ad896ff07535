"""Training: the lesson's recipe on cleaned.csv gives a served, verifiable model version."""
import json
import subprocess

import pytest
import torch

from tests.pictures import tinted_set
from webapp.dataset.store import Dataset
from webapp.model import lr_rules, registry, training
from webapp.web import forms


def test_cleaned_csv_loads_unchanged_in_plain_fastai(trained_dir):
    from fastai.vision.all import ImageDataLoaders, Resize

    data_dir, _, _ = trained_dir
    dls = ImageDataLoaders.from_csv(data_dir, "cleaned.csv", valid_col="is_valid",
                                    item_tfms=Resize(32), bs=4, num_workers=0)
    assert list(dls.vocab) == ["blue", "red"]
    ds = Dataset(data_dir)
    counts = ds.class_counts()
    ds.close()
    assert len(dls.valid_ds) == sum(n["valid"] for n in counts.values())
    xb, yb = dls.one_batch()
    assert tuple(xb.shape[1:]) == (3, 32, 32)


def test_the_trained_model_beats_chance_and_is_active(trained_dir):
    data_dir, version, metrics = trained_dir
    assert registry.active_version(data_dir) == version
    assert metrics["error_rate"] < 0.3  # two classes: chance is 0.5
    # No ImageNet weights: one lr_find, then the whole network in one cycle of all 2 + 2 epochs.
    phases = [h["phase"] for h in metrics["history"]]
    assert phases == ["from scratch"] * 4
    assert all(h["train_loss"] > 0 and h["valid_loss"] > 0 and h["seconds"] >= 0
               for h in metrics["history"])
    curve = metrics["lr_find"]["from scratch"]
    assert set(metrics["lr_find"]) == {"from scratch"} and len(curve["lr"]) == len(curve["loss"])
    assert curve["num_it"] == lr_rules.LR_FIND_MIN_ITERS >= curve["ran"] > 5
    lr = metrics["lr"]
    assert lr == lr_rules.scratch_lr(curve["suggestions"]) and metrics["lr_unfrozen"] == [lr, lr]
    assert metrics["recipe"] == ("from scratch (no ImageNet weights): the whole network, "
                                 f"4 epochs at lr {lr:.1e} (lr_find's valley, at least 3e-03) "
                                 "in batches of 4")
    assert metrics["body_frozen_first"] is False
    prov = metrics["provenance"]
    assert prov["classes"] == ["blue", "red"] and prov["seed"] == 42
    assert metrics["pretrained"] is False
    on_disk = json.loads((registry.models_dir(data_dir) / version / "metrics.json").read_text())
    assert on_disk["export_sha256"] == registry.version_record(data_dir, version)["sha256"]


def test_each_phase_records_its_seconds(trained_dir):
    _, _, metrics = trained_dir
    phases = metrics["phase_seconds"]
    assert list(phases) == ["setup", "lr_find", "from scratch", "export"]
    assert all(s >= 0 for s in phases.values())
    assert sum(phases.values()) == pytest.approx(metrics["seconds"], abs=0.5)
    epochs = sum(h["seconds"] for h in metrics["history"])
    # The stage holds its epochs (each figure is rounded to 0.01 s on its own).
    assert phases["from scratch"] >= epochs - 0.01 * (len(metrics["history"]) + 1)


def test_the_exported_learner_predicts_its_own_validation_images(trained_dir):
    data_dir, version, _ = trained_dir
    _, learn = registry.load_active(data_dir)
    ds = Dataset(data_dir)
    valid = [r for r in ds.labeled() if r["is_valid"]]
    ds.close()
    hits = sum(learn.predict(data_dir / r["path"])[0] == r["label"] for r in valid)
    assert hits / len(valid) > 0.7


def test_a_tampered_export_is_refused(trained_copy):
    data_dir, version, _ = trained_copy
    pkl = registry.models_dir(data_dir) / version / registry.EXPORT
    pkl.write_bytes(pkl.read_bytes() + b"\0")
    with pytest.raises(registry.ModelError, match="does not match its recorded sha256"):
        registry.load_active(data_dir)


def test_training_refuses_one_class(tmp_path):
    ds = Dataset(tmp_path)
    for label, data in tinted_set(per_class=5):
        if label == "red":
            ds.add_image(data, label=label)
    ds.close()
    with pytest.raises(training.TrainingRefused, match="at least two classes"):
        training.train(tmp_path)


def test_training_refuses_a_class_without_validation_images(tmp_path):
    ds = Dataset(tmp_path, valid_pct=0.0)
    for label, data in tinted_set(per_class=3):
        ds.add_image(data, label=label)
    ds.close()
    with pytest.raises(training.TrainingRefused, match="no validation images.*: blue, red"):
        training.train(tmp_path)


def test_training_refuses_without_cleaned_csv(tmp_path):
    with pytest.raises(training.TrainingRefused, match="cleaned.csv does not exist"):
        training.train(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"arch": "vgg99"}, "unknown architecture"),
    ({"size": 8}, "image size"),
    ({"epochs": 0, "fine_tune_epochs": 0}, "at least one epoch"),
    ({"lr": -1.0}, "learning rate"),
])
def test_bad_options_are_refused(change, message):
    with pytest.raises(training.TrainingRefused, match=message):
        training.TrainOptions(**change).check()


def test_pretrained_weights_in_the_torch_cache_are_used(trained_copy, tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights, resnet18

    data_dir, _, _ = trained_copy
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert not training.weights_cached("resnet18")
    assert training.pretrained_weights_available("resnet18", allow_download=False) is False
    # Stand-in "ImageNet" weights, placed where torchvision caches the real ones.
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet18().state_dict(), cache / ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1])
    assert training.weights_cached("resnet18")
    lines = []
    opts = training.TrainOptions(arch="resnet18", size=32, epochs=1, fine_tune_epochs=0, bs=8,
                                 lr=1e-3, lr_find_iters=5, activate=False)
    version, metrics = training.train(data_dir, opts, log=lines.append)
    assert metrics["pretrained"] is True and "ImageNet weights" in lines[0]
    # The lesson's recipe: the body frozen first (no unfrozen epochs asked, so no lr_find for them).
    assert metrics["body_frozen_first"] and [h["phase"] for h in metrics["history"]] == ["frozen"]
    assert metrics["lr_find"] == {} and "Recipe: the lesson's, from ImageNet weights" in lines[1]
    assert registry.active_version(data_dir) != version  # --no-activate kept the old one


def test_an_offline_machine_never_tries_to_download_weights(monkeypatch):
    """WINNOW_OFFLINE=1 reaches the train job's options: weights from the cache only."""
    asked = []
    monkeypatch.setattr(training, "pretrained_weights_available",
                        lambda arch, allow_download=True: asked.append(allow_download) or False)
    for offline in (True, False):
        settings = forms.recipe_settings({"VALID_PCT": 0.2, "SPLIT_SEED": 42, "OFFLINE": offline})
        opts = training.TrainOptions.from_params({"arch": "resnet18", **settings})
        assert training._use_pretrained(opts, lambda line: None, [], {}) is False
    assert asked == [False, True]


def test_a_killed_runs_files_are_swept_and_a_live_runs_are_kept(tmp_path, trained_dir):
    """Training works in <data dir>/tmp/train-<pid>-…; what a killed run left there goes."""
    data_dir, _, _ = trained_dir
    assert list((data_dir / training.WORK_DIR).iterdir()) == []  # a finished run cleans up
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        root = training.work_root(tmp_path)
        for pid in (dead.pid, alive.pid):
            (root / f"train-{pid}-x").mkdir()
            (root / f"train-{pid}-x" / "cleaned.csv").write_text("name,label,is_valid\n")
        assert training.sweep_work_dirs(tmp_path) == [f"train-{dead.pid}-x"]
        assert [p.name for p in root.iterdir()] == [f"train-{alive.pid}-x"]
    finally:
        alive.kill()
        alive.wait()
