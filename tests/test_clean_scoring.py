"""Scoring for the cleaner: each labeled image's probabilities and embedding, stored per version."""
import random

import numpy as np
import pytest

from webapp.cleaning import scoring
from webapp.core import images
from webapp.dataset.store import Dataset
from webapp.jobs import runner as jobs
from webapp.model import registry
from webapp.model.classifier import Classifier


def test_scoring_a_version_stores_probabilities_and_embeddings_of_every_labeled_image(trained_copy):
    data_dir, version, _ = trained_copy
    calls, steps = [], []
    meta = scoring.score_version(data_dir, version, on_progress=lambda d, t: calls.append((d, t)),
                                 batch_size=16, on_phase=steps.append)
    # The steps after the scoring say what they do while they run: a job's bar shows them.
    assert [s.split()[0] for s in steps] == ["Looking", "Judging", "Drawing"]

    labeled = scoring.labeled_images(data_dir)
    assert calls[0] == (0, len(labeled)) and calls[-1] == (len(labeled), len(labeled))
    assert len(calls) == 1 + -(-len(labeled) // 16)  # once at the start, then after each batch
    assert meta["images"] == len(labeled) and meta["failed"] == []

    scores = scoring.load_scores(data_dir, version)
    assert scores.vocab == ["blue", "red"]
    assert scores.image_ids.tolist() == [r["id"] for r in labeled]
    assert scores.probs.shape == (len(labeled), 2)
    np.testing.assert_allclose(scores.probs.sum(1), 1, atol=1e-5)
    assert scores.embeddings.dtype == np.float16 and scores.embeddings.shape[0] == len(labeled)

    # One pass gives what the classifier's own probabilities() and embed() give.
    clf = Classifier(registry.load_learner_verified(data_dir, version))
    pics = [images.decode((data_dir / r["path"]).read_bytes()) for r in labeled[:5]]
    np.testing.assert_allclose(scores.probs[:5], clf.probabilities(pics), atol=1e-5)
    np.testing.assert_allclose(scores.embeddings[:5].astype(np.float32), clf.embed(pics),
                               rtol=1e-2, atol=1e-2)


def test_scoring_hashes_every_image_so_the_list_pairs_a_planted_copy_with_its_original(
        trained_copy):
    from tests.pictures import encode, near_copy, scene
    from webapp.cleaning import lists as cleaning

    data_dir, version, _ = trained_copy
    ds = Dataset(data_dir)
    picture = scene(random.Random(5))
    original = ds.add_image(encode(picture, "PNG"), label="red").image_id
    copy = ds.add_image(near_copy(picture), label="red").image_id  # re-encoded, cropped, shrunk
    scoring.score_version(data_dir, version, batch_size=16)

    scores = scoring.load_scores(data_dir, version, embeddings=False)
    assert scores.hashes.dtype == np.uint64 and len(scores.hashes) == len(scores)
    assert scoring.load_pairs(data_dir, version)[3]["method"] == "phash"
    page = cleaning.Cleaner(ds, version).duplicates()
    ds.close()
    # The copy is found; no two of the other pictures (same colour, same kind) are.
    assert [(p["first"]["image_id"], p["second"]["image_id"]) for p in page.items] == [
        (original, copy)]


def test_a_stopped_scoring_writes_nothing(trained_copy):
    data_dir, version, _ = trained_copy

    def cancel(done, total):
        if done:
            raise jobs.Cancelled("stop")

    with pytest.raises(jobs.Cancelled):
        scoring.score_version(data_dir, version, on_progress=cancel, batch_size=8)
    assert scoring.load_scores(data_dir, version) is None


def test_rescoring_is_a_job_and_a_missing_file_is_reported_not_fatal(trained_copy):
    data_dir, version, _ = trained_copy
    ds = Dataset(data_dir)
    gone = ds.labeled()[0]
    ds.close()
    (data_dir / gone["path"]).unlink()

    job = jobs.run_here(data_dir, "score", {})
    assert job["status"] == "succeeded", jobs.read_log(data_dir, job["id"])
    n = len(scoring.labeled_images(data_dir))
    assert job["message"].startswith(f"Scored {n - 1} images with {version}")
    assert job["result"]["failed"] == 1
    scores = scoring.load_scores(data_dir, version)
    assert gone["id"] not in scores.image_ids and scores.meta["failed"] == [gone["id"]]

    # The cleaner's pages read these real scores: the model learned red and blue, so the
    # lowest-loss red images are predicted red.
    from tests.conftest import AdminSession, make_app

    client = make_app(data_dir).test_client()
    AdminSession(client).login()
    red = client.get("/clean/top-losses.json?label=red&limit=1000").get_json()
    assert red["version"] == version and red["total"] == sum(
        1 for r in scoring.labeled_images(data_dir)
        if r["label"] == "red" and r["id"] != gone["id"])
    assert red["items"][-1]["predicted"] == "red"
    assert client.get("/clean/?label=red").status_code == 200
    assert client.get("/clean/duplicates").status_code == 200
    assert client.get("/clean/label-issues.json").status_code == 200


def test_rescoring_without_a_model_fails_with_a_reason(tmp_path):
    job = jobs.run_here(tmp_path, "score", {})
    assert job["status"] == "failed"
    assert "no active model" in job["message"]


def test_cross_validation_gives_every_training_image_an_out_of_fold_score(trained_copy):
    from webapp.cleaning import crossval, lists as cleaning

    data_dir, version, _ = trained_copy
    job = jobs.run_here(data_dir, "score", {"cv_folds": 2, "cv_epochs": 1})
    assert job["status"] == "succeeded", jobs.read_log(data_dir, job["id"])
    assert "Cross-validated" in job["message"] and job["result"]["cv"]["folds"] == 2
    train = [r["id"] for r in scoring.labeled_images(data_dir) if not r["is_valid"]]
    cv = scoring.load_cv_scores(data_dir, version)
    assert cv.image_ids.tolist() == sorted(train) and cv.vocab == ["blue", "red"]
    np.testing.assert_allclose(cv.probs.sum(1), 1, atol=1e-5)
    assert cv.meta["recipe"]["arch"] == "resnet18" and not cv.meta["recipe"]["pretrained"]
    assert (cv.meta["recipe"]["epochs"], cv.meta["recipe"]["fine_tune_epochs"]) == (1, 0)
    ds = Dataset(data_dir)
    issues = cleaning.Cleaner(ds, version).label_issues(limit=5)
    assert issues.total == len(scoring.labeled_images(data_dir))  # valid and train both judged
    ds.close()
    folds = crossval.assign_folds(scoring.labeled_images(data_dir), 2)
    assert folds == crossval.assign_folds(scoring.labeled_images(data_dir), 2)  # the same every run
    with pytest.raises(crossval.CrossValidationRefused, match="between 2 and 10"):
        crossval.check_folds(1, [])


def test_the_score_command_runs_the_same_job_with_a_progress_bar(trained_copy):
    from tests.conftest import make_app

    data_dir, version, _ = trained_copy
    result = make_app(data_dir).test_cli_runner().invoke(args=["score", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert f"Scored {len(scoring.labeled_images(data_dir))} images with {version}" in result.output
    bad = make_app(data_dir).test_cli_runner().invoke(args=["score", "--cv-folds", "1"])
    assert bad.exit_code != 0 and "--cv-folds must be 0 or 2 to 10" in bad.output
