"""Each version gets a serving bundle; the torch-free runtime serves it when its checks pass."""
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_app
from tests.pictures import jpeg, tinted
from webapp.core import db, images
from webapp.core.files import file_sha256
from webapp.model import bundle, registry, serving, training
from webapp.model.classifier import Classifier
from webapp.runtime import bundle as rt

ROOT = Path(__file__).resolve().parent.parent


def bundle_path(data_dir, version):
    return bundle.bundle_dir(registry.models_dir(data_dir) / version)


def validation_pictures(data_dir, n=None):
    rows = [r for r in training.read_manifest(data_dir) if r["is_valid"] == "True"][:n]
    return [images.decode((Path(data_dir) / r["name"]).read_bytes()) for r in rows]


def resign(data_dir, version, manifest_edit=None, reference_edit=None):
    """Change a bundle as another export would have made it, and record it as the registry would."""
    path = bundle_path(data_dir, version)
    manifest = json.loads((path / rt.MANIFEST).read_text())
    if reference_edit:
        ref = rt.read_reference(path)
        reference_edit(ref)
        np.savez_compressed(path / rt.REFERENCE, **ref)
        manifest["files"][rt.REFERENCE] = file_sha256(path / rt.REFERENCE)
    if manifest_edit:
        manifest_edit(manifest)
    (path / rt.MANIFEST).write_text(json.dumps(manifest))
    record = registry.version_record(data_dir, version)
    metrics = record["metrics"]
    metrics["bundle"] = {**metrics["bundle"], "sha256": file_sha256(path / rt.MANIFEST),
                         "int8": manifest["int8"]}
    with db.session(data_dir) as conn:
        conn.execute("UPDATE models SET metrics = ? WHERE version = ?",
                     (json.dumps(metrics), version))


def int8_passed(manifest):
    manifest["int8"] = {**manifest["int8"], "passed": True, "reason": ""}


# ---- what training writes -----------------------------------------------------------------

def test_training_writes_a_bundle_whose_fp32_matches_learn_predict(trained_dir):
    data_dir, version, metrics = trained_dir
    record = metrics["bundle"]
    n_valid = len(validation_pictures(data_dir))
    assert record["status"] == "ready" and record["input_size"] == [32, 32]
    assert record["fp32"]["max_abs_diff"] <= 1e-4 and record["fp32"]["checked_on"] == n_valid
    path = bundle_path(data_dir, version)
    manifest = json.loads((path / rt.MANIFEST).read_text())
    assert file_sha256(path / rt.MANIFEST) == record["sha256"]
    assert set(manifest["files"]) == {rt.FP32, rt.INT8, rt.REFERENCE}
    assert manifest["vocab"] == ["blue", "red"] and manifest["spec"]["item"][0]["op"] == "resize"
    # INT8 was measured against fp32 and the labels, and the verdict says why either way.
    int8 = record["int8"]
    assert int8["checked_on"] == n_valid and 0 <= int8["top1_agreement"] <= 1
    assert int8["passed"] is (int8["reason"] == "")
    # metrics.json on disk holds the same record.
    on_disk = json.loads((registry.models_dir(data_dir) / version / registry.METRICS).read_text())
    assert on_disk["bundle"] == record


def test_the_runtime_gives_learn_predicts_probabilities_on_the_validation_pictures(trained_dir):
    data_dir, version, _ = trained_dir
    predictor = serving.load_served(data_dir, version, "fp32")
    assert predictor.runtime == "onnx" and predictor.precision == "fp32"
    learn = registry.load_learner_verified(data_dir, version)
    for picture in validation_pictures(data_dir, 8):
        _, _, theirs = learn.predict(picture)
        ours = dict(predictor.predict(picture))
        assert max(abs(ours[c] - float(p)) for c, p in zip(predictor.vocab, theirs,
                                                           strict=True)) <= 1e-4


def test_a_pipeline_the_spec_cannot_express_gets_no_bundle_and_says_why(trained_dir, tmp_path):
    from fastai.vision.augment import Flip

    data_dir, version, _ = trained_dir
    learn = registry.load_learner_verified(data_dir, version)
    learn.dls.valid.after_batch.add(Flip(size=16))  # would resize the batch at validation
    valid, calibration = training.bundle_pictures(data_dir, training.read_manifest(data_dir))
    record = bundle.build(learn, tmp_path / "b", valid, calibration, log=lambda *a: None)
    assert record["status"] == "refused" and "Flip: resizes the batch" in record["reason"]
    assert not (tmp_path / "b").exists()


def test_fp32_that_drifts_from_learn_predict_is_refused(trained_dir, tmp_path, monkeypatch):
    data_dir, version, _ = trained_dir
    monkeypatch.setattr(rt, "PARITY", 1e-12)  # stricter than float rounding: it must fail
    learn = registry.load_learner_verified(data_dir, version)
    valid, calibration = training.bundle_pictures(data_dir, training.read_manifest(data_dir))
    record = bundle.build(learn, tmp_path / "b", valid, calibration, log=lambda *a: None)
    assert record["status"] == "refused" and "differ from learn.predict" in record["reason"]
    assert record["fp32"]["checked_on"] == len(valid) and not (tmp_path / "b").exists()


@pytest.mark.parametrize("n, fp32_right, int8_right, agree, passed", [
    (100, 100, 100, 100, True),
    (100, 100, 99, 99, True),  # one picture on a small set, 99% agreement
    (100, 100, 98, 98, False),  # agreement below 99%
    (150, 140, 139, 149, True),  # one picture lost on a set under 200
    (400, 380, 378, 398, True),  # 0.5 points on a large set
    (400, 380, 377, 397, False),  # 0.75 points, though 99.25% agree
])
def test_int8_serves_only_when_it_is_as_accurate(n, fp32_right, int8_right, agree, passed):
    labels = np.zeros(n, dtype=np.int64)
    fp32 = np.tile([0.1, 0.9], (n, 1))
    fp32[:fp32_right] = [0.9, 0.1]
    int8 = fp32.copy()
    wrong_now = list(range(int8_right, fp32_right))  # right with fp32, wrong with INT8
    int8[wrong_now] = [0.1, 0.9]
    # the rest of the disagreements: pictures both get wrong, in different ways (3 classes)
    others = n - agree - len(wrong_now)
    if others > 0:
        fp32 = np.hstack([fp32, np.zeros((n, 1))])
        int8 = np.hstack([int8, np.zeros((n, 1))])
        wrong_both = list(range(fp32_right, fp32_right + others))
        int8[wrong_both] = [0.1, 0.0, 0.9]
    verdict = bundle.int8_verdict(fp32, int8, labels)
    assert verdict["top1_agreement"] == pytest.approx(agree / n)
    assert verdict["passed"] is passed and bool(verdict["reason"]) is not passed


# ---- loading it where it serves -------------------------------------------------------------

def test_a_changed_bundle_file_is_refused_and_fastai_serves(trained_copy):
    data_dir, version, _ = trained_copy
    model = bundle_path(data_dir, version) / rt.FP32
    model.write_bytes(model.read_bytes() + b"\0")
    served = serving.load_served(data_dir, version)
    assert isinstance(served, Classifier) and "model.onnx does not match its sha256" in served.note


def test_a_bundle_json_not_the_one_registered_is_refused(trained_copy):
    data_dir, version, _ = trained_copy
    manifest = bundle_path(data_dir, version) / rt.MANIFEST
    manifest.write_text(manifest.read_text().replace('"blue"', '"green"'))
    served = serving.load_served(data_dir, version)
    assert isinstance(served, Classifier) and "does not match the sha256" in served.note


def test_int8_that_passed_serves_by_default(trained_copy):
    data_dir, version, _ = trained_copy
    resign(data_dir, version, int8_passed)
    served = serving.load_served(data_dir, version)
    assert (served.runtime, served.precision, served.note) == ("onnx", "int8", "")
    assert served.checks["int8"]["max_drift"] <= rt.INT8_MAX_DRIFT
    assert served.model_path.name == rt.INT8


def test_int8_that_disagrees_on_this_machine_falls_back_to_fp32_and_readyz_says_why(
        trained_copy):
    data_dir, version, _ = trained_copy

    def other_machine(ref):  # what the export machine's INT8 gave: far from ours
        ref["int8"] = np.roll(ref["int8"], 1, axis=1)

    resign(data_dir, version, int8_passed, other_machine)
    app = make_app(data_dir, LOAD_MODEL=True)
    served = app.extensions["winnow.model"].classifier
    assert served.precision == "fp32" and "where the bundle was made" in served.note
    ready = app.test_client().get("/readyz").get_json()
    assert ready["runtime"] == "onnx" and ready["precision"] == "fp32"
    assert "serving fp32: INT8 probabilities differ" in ready["note"]


def test_precision_setting_picks_the_model(trained_copy):
    data_dir, version, _ = trained_copy
    resign(data_dir, version, int8_passed)
    assert serving.load_served(data_dir, version, "fp32").precision == "fp32"
    resign(data_dir, version, lambda m: m["int8"].update(passed=False, reason="too inaccurate"))
    auto = serving.load_served(data_dir, version, "auto")
    assert auto.precision == "fp32" and auto.note == "serving fp32: too inaccurate"
    forced = serving.load_served(data_dir, version, "int8")
    assert forced.precision == "int8" and "despite: too inaccurate" in forced.note


def test_an_unknown_precision_setting_stops_the_app_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="WINNOW_PRECISION='int4': choose one of auto, fp32"):
        make_app(tmp_path / "data", PRECISION="int4")


def test_a_version_without_a_bundle_is_served_by_fastai_and_says_so(trained_copy):
    data_dir, version, _ = trained_copy
    record = registry.version_record(data_dir, version)
    metrics = {k: v for k, v in record["metrics"].items() if k != "bundle"}
    with db.session(data_dir) as conn:
        conn.execute("UPDATE models SET metrics = ? WHERE version = ?",
                     (json.dumps(metrics), version))
    app = make_app(data_dir, LOAD_MODEL=True)
    ready = app.test_client().get("/readyz").get_json()
    assert ready["runtime"] == "fastai" and "no serving bundle" in ready["note"]


# ---- the monolith serves through it --------------------------------------------------------

def test_the_classify_api_answers_with_the_runtime_as_learn_predict_does(trained_dir):
    data_dir, version, _ = trained_dir
    # fp32 answers as learn.predict does; INT8, when it passes its checks, is judged by them.
    app = make_app(data_dir, LOAD_MODEL=True, PRECISION="fp32")
    assert app.extensions["winnow.model"].classifier.runtime == "onnx"
    learn = registry.load_learner_verified(data_dir, version)
    client = app.test_client()
    rng = random.Random(3)
    for _ in range(4):
        data = jpeg(tinted(rng.choice(["red", "blue"]), rng, rng.choice([32, 60, 90])))
        answer = client.post("/api/classify", data=data, content_type="image/jpeg").get_json()
        assert answer["model"] == version
        _, _, theirs = learn.predict(images.decode(data))
        ours = dict(answer["predictions"])
        assert max(abs(ours[c] - float(p)) for c, p in zip(learn.dls.vocab, theirs,
                                                           strict=True)) <= 1e-4


def test_the_report_page_shows_the_bundle_checks(trained_dir, tmp_path):
    from tests.conftest import AdminSession

    data_dir, version, metrics = trained_dir
    app = make_app(data_dir, LOAD_MODEL=True)
    admin = AdminSession(app.test_client())
    admin.login()
    page = admin.client.get(f"/admin/models/{version}").get_data(as_text=True)
    card = page[page.index('id="bundle"'):].split("</section>")[0]
    assert "matches learn.predict within" in card
    assert f"on {metrics['bundle']['fp32']['checked_on']} validation pictures" in card
    assert "Top-1 agreement with fp32" in card
    if not metrics["bundle"]["int8"]["passed"]:
        assert metrics["bundle"]["int8"]["reason"] in card.replace("&#39;", "'")
    assert "This worker serves it with <strong>ONNX Runtime" in card


RUN_WITHOUT_TORCH = """
import json, sys
from webapp.core import images
from webapp.runtime import bundle
path, version, sha, picture = sys.argv[1:]
predictor = bundle.load(path, version, "auto", expected_sha256=sha)
data = open(picture, "rb").read()
ranked = predictor.predict(images.decode(data, draft=predictor.draft_size))
heavy = sorted(m for m in ("torch", "fastai", "torchvision") if m in sys.modules)
print(json.dumps({"ranked": ranked, "heavy": heavy, "precision": predictor.precision}))
"""


def test_a_process_loads_a_bundle_and_classifies_without_torch_or_fastai(trained_dir, tmp_path):
    data_dir, version, metrics = trained_dir
    picture = tmp_path / "photo.jpg"
    picture.write_bytes(jpeg(tinted("red", random.Random(1), 64)))
    run = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TORCH,
                          str(bundle_path(data_dir, version)), version,
                          metrics["bundle"]["sha256"], str(picture)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(run.stdout)
    assert out["heavy"] == [] and out["ranked"][0][0] == "red"


# ---- large photos: JPEG draft decoding ------------------------------------------------------

def photo(w, h, seed=0):
    """A photo-like JPEG: smooth colour fields plus grain, so the encoder keeps detail."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC),
                      dtype=np.int16)
    grain = rng.integers(-12, 13, size=(h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))


def test_a_large_jpeg_decodes_at_a_reduced_size_never_below_twice_the_input():
    data = jpeg(photo(4032, 3024))
    full = images.decode(data)
    drafted = images.decode(data, draft=(64, 64))
    assert full.size == (4032, 3024)
    assert drafted.size == (504, 378)  # 1/8: the smallest DCT scale, still ≥ 64 each way
    assert images.decode(data, draft=(1000, 1000)).size == (2016, 1512)  # 1/2 keeps ≥ 1000


def test_draft_decoding_turns_a_phone_photo_upright_and_keeps_the_pixel_cap():
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = 6
    data = jpeg(photo(1600, 1200, seed=1), exif=exif.tobytes())
    assert images.decode(data, draft=(100, 100)).size == (150, 200)  # 1/8, then upright
    with pytest.raises(images.ImageRejected, match="the limit is 1 megapixels"):
        images.decode(data, max_pixels=1_000_000, draft=(100, 100))


def test_draft_decoding_agrees_with_full_decoding_on_photos(trained_dir):
    data_dir, version, _ = trained_dir
    predictor = serving.load_served(data_dir, version, "fp32")
    rows = [r for r in training.read_manifest(data_dir) if r["is_valid"] == "True"][:6]
    for r in rows:  # each validation picture re-encoded as a 2000x1500 photo
        small = images.decode((Path(data_dir) / r["name"]).read_bytes())
        data = jpeg(small.resize((2000, 1500), Image.Resampling.BICUBIC))
        full = predictor.probabilities([images.decode(data)])[0]
        drafted = predictor.probabilities([images.decode(data, draft=predictor.draft_size)])[0]
        assert full.argmax() == drafted.argmax() and np.abs(full - drafted).max() < 0.05
