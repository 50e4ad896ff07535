"""ONNX Runtime serves a model only when its probabilities match the torch path."""
import random

import pytest

from tests.conftest import make_app
from tests.pictures import jpeg, tinted
from webapp.core import images
from webapp.model import onnx_model, registry, training
from webapp.model.classifier import Classifier


def pictures(n=20):
    rng = random.Random(4)
    return [images.decode(jpeg(
        tinted(rng.choice(["red", "blue"]), rng, rng.choice([24, 32, 60])))) for _ in range(n)]


def test_training_exports_a_checked_onnx_model(trained_dir):
    data_dir, version, metrics = trained_dir
    info = metrics["onnx"]
    assert info["serves"] is True and info["max_abs_diff"] <= 1e-4 and info["checked_on"] > 0
    path = registry.models_dir(data_dir) / version / onnx_model.ONNX_FILE
    assert path.is_file()


def test_the_app_serves_with_onnx_runtime_and_matches_learn_predict(trained_dir):
    data_dir, version, _ = trained_dir
    app = make_app(data_dir, LOAD_MODEL=True)
    clf = app.extensions["winnow.model"].classifier
    assert isinstance(clf, onnx_model.OnnxClassifier)
    learn = clf.learn
    for pic in pictures():
        _, _, probs = learn.predict(pic)
        ours = dict(clf.predict(pic))
        assert max(abs(ours[c] - float(p)) for c, p in zip(clf.vocab, probs, strict=True)) <= 1e-4


def test_a_changed_onnx_file_is_not_served(trained_copy):
    data_dir, version, _ = trained_copy
    path = registry.models_dir(data_dir) / version / onnx_model.ONNX_FILE
    path.write_bytes(path.read_bytes() + b"\0")
    clf = make_app(data_dir, LOAD_MODEL=True).extensions["winnow.model"].classifier
    assert type(clf) is Classifier


@pytest.mark.parametrize("breaks, reason", [
    ("check", "differ from torch by 5.0e-03"),
    ("export", "ONNX export failed"),
])
def test_when_onnx_does_not_match_torch_serves_and_the_reason_is_kept(trained_copy, monkeypatch,
                                                                       breaks, reason):
    data_dir, version, _ = trained_copy
    if breaks == "check":
        monkeypatch.setattr(onnx_model, "check_onnx", lambda *a: 5e-3)
    else:
        monkeypatch.setattr(onnx_model, "export_onnx", lambda *a: 1 / 0)
    _, learn = registry.load_active(data_dir)
    rows = training.read_manifest(data_dir)
    out = training._export_onnx_checked(learn, registry.models_dir(data_dir) / version, 32,
                                        data_dir, rows)
    assert out["serves"] is False and reason in out["reason"]
