"""Retraining jobs: started on the admin page, watched, cancelled, failed, killed, one at a time."""
import os
import random
import re
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import AdminSession, make_app
from tests.pictures import jpeg, tinted
from tests.test_jobs import wait_for
from webapp.cleaning import scoring
from webapp.dataset.manifest import CLEANED_CSV
from webapp.dataset.store import Dataset
from webapp.jobs import runner as jobs
from webapp.model import registry, training
from webapp.model.training import TrainOptions
from webapp.web import forms

# The tiniest run of the lesson's recipe that still goes through every phase.
TINY = {"arch": "resnet18", "size": "32", "epochs": "1", "fine_tune_epochs": "1", "lr": "0.01",
        "bs": "8", "pretrained": "no", "lr_find_iters": "10", "activate": "1"}


def tiny_params(**change):
    params = {"arch": "resnet18", "size": 32, "epochs": 1, "fine_tune_epochs": 1, "lr": 1e-2,
              "bs": 8, "pretrained": False, "lr_find_iters": 10}
    return {**params, **change}


def model_dirs(data_dir):
    return sorted(p.name for p in registry.models_dir(data_dir).iterdir() if p.is_dir())


@pytest.fixture
def trained_admin(trained_copy):
    """An admin logged in to an app on a copy of the trained data dir."""
    data_dir, v1, _ = trained_copy
    session = AdminSession(make_app(data_dir).test_client())
    session.login()
    return data_dir, v1, session


def test_an_admin_starts_a_retrain_a_second_is_refused_and_a_killed_job_changes_nothing(
        trained_admin):
    data_dir, v1, admin = trained_admin
    client = admin.client
    before = model_dirs(data_dir)
    r = client.post("/admin/train", data={**TINY, "epochs": "50", "csrf_token": admin.csrf_token()})
    assert r.status_code == 303 and r.location.endswith("/admin/#retrain")
    job = jobs.running(data_dir, "train")
    assert job["params"]["epochs"] == 50 and job["params"]["valid_pct"] == 0.2

    page = client.get("/admin/").get_data(as_text=True)
    assert f"Training started as job #{job['id']}" in page
    assert f'data-job-status="/jobs/{job["id"]}.json"' in page and "<progress" in page

    second = client.post("/admin/train", data={**TINY, "csrf_token": admin.csrf_token()})
    assert second.status_code == 409
    text = second.get_data(as_text=True)
    assert f"A train job (#{job['id']}) is running" in text
    assert f'href="/jobs/{job["id"]}"' in text

    deadline = time.monotonic() + 90
    while jobs.get(data_dir, job["id"])["phase"] != "from scratch":
        assert time.monotonic() < deadline, jobs.read_log(data_dir, job["id"])
        time.sleep(0.2)
    os.kill(_pid(data_dir, job["id"]), signal.SIGKILL)  # as the out-of-memory killer would
    killed_at = time.monotonic()
    dead = wait_for(data_dir, job["id"], timeout=15)
    assert dead["status"] == "failed" and "stopped without finishing" in dead["message"]
    assert time.monotonic() - killed_at < 3  # a dead pid is noticed on the next read
    assert "Training resnet18 at 32px" in jobs.read_log(data_dir, job["id"])
    assert registry.active_version(data_dir) == v1
    assert [v["version"] for v in registry.versions(data_dir)] == [v1]
    assert model_dirs(data_dir) == before


def _pid(data_dir, job_id):
    from webapp.core import db

    with db.session(data_dir) as conn:
        return conn.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()["pid"]


def test_the_cli_runs_the_same_job_with_every_phase_and_the_latest_losses(trained_copy):
    data_dir, v1, _ = trained_copy
    runner = make_app(data_dir).test_cli_runner()
    r = runner.invoke(args=["train", "--arch", "resnet18", "--size", "32", "--epochs", "1",
                            "--fine-tune-epochs", "1", "--bs", "8", "--no-pretrained",
                            "--lr-find-iters", "10"])
    assert r.exit_code == 0, r.output
    out = r.output
    # No ImageNet weights: one lr_find, then both epochs in one cycle for the whole network.
    phases = ["lr_find", "from scratch epoch 1/2", "from scratch epoch 2/2", "export", "scoring"]
    at = [out.index(p, out.index(phases[i - 1]) + 1 if i else 0) for i, p in enumerate(phases)]
    assert at == sorted(at), out
    assert re.search(r"epoch 0: train_loss \d+\.\d{6}  valid_loss \d+\.\d{6}  error_rate", out)
    job = jobs.recent(data_dir, kind="train")[0]
    assert job["status"] == "succeeded" and job["actor"] == "cli"
    v2 = job["result"]["version"]
    assert f"Model {v2}: error rate" in out and "now active" in out and "Diagnosis:" in out
    assert registry.active_version(data_dir) == v2 != v1
    metrics = registry.version_record(data_dir, v2)["metrics"]
    assert set(metrics["lr_find"]) == {"from scratch"}  # --lr auto: lr_find picked it
    assert metrics["lr_find"]["from scratch"]["num_it"] == 10  # --lr-find-iters, as given
    # Each phase's seconds, scoring's added once the job had scored the version.
    assert list(metrics["phase_seconds"]) == ["setup", "lr_find", "from scratch", "export",
                                              "scoring"]
    assert re.search(r"in \d+ s \(\d+ s of it lr_find\)", out)
    assert metrics["confusion"]["classes"] == ["blue", "red"]
    assert sum(map(sum, metrics["confusion"]["matrix"])) == sum(
        n["valid"] for n in metrics["provenance"]["counts"].values())
    copied = registry.models_dir(data_dir) / v2 / CLEANED_CSV
    assert copied.read_bytes() == (data_dir / CLEANED_CSV).read_bytes()
    assert scoring.load_scores(data_dir, v2).meta["images"] == 64
    assert registry.previous_version(data_dir) == v1


def cancel_when(data_dir, phase, seen):
    """Return an on_update that asks the job to stop once it is under way in `phase`."""
    def watch(status):
        seen.append(status["phase"])
        if status["phase"] == phase and status["done"] >= 1 and not status["cancel_requested"]:
            assert jobs.cancel(data_dir, status["id"])
    return watch


def test_cancel_stops_fastai_cleanly_and_leaves_no_version(trained_copy):
    data_dir, v1, _ = trained_copy
    before, seen = model_dirs(data_dir), []
    job = jobs.run_here(data_dir, "train", tiny_params(epochs=3),
                        on_update=cancel_when(data_dir, "from scratch", seen))
    assert job["status"] == "cancelled", job["message"]
    assert seen[-1] == "from scratch"  # it stopped in the epoch it was asked to, not later
    assert registry.active_version(data_dir) == v1
    assert [v["version"] for v in registry.versions(data_dir)] == [v1]
    assert model_dirs(data_dir) == before


def test_cancel_while_scoring_takes_the_new_version_away_again(trained_copy, monkeypatch):
    from tests.test_app import second_version

    data_dir, v1, metrics = trained_copy
    made = []

    def trained_in_no_time(data_dir, opts, **kwargs):  # the recipe itself is tested above
        made.append(second_version(data_dir, v1))
        return made[-1], metrics

    monkeypatch.setattr(training, "train", trained_in_no_time)
    seen = []
    job = jobs.run_here(data_dir, "train", tiny_params(),
                        on_update=cancel_when(data_dir, "scoring", seen))
    assert job["status"] == "cancelled" and seen[-1] == "scoring"
    assert registry.active_version(data_dir) == v1
    assert [v["version"] for v in registry.versions(data_dir)] == [v1]
    assert not (registry.models_dir(data_dir) / made[0]).exists()


def test_a_failed_training_says_why_and_keeps_the_active_model(trained_copy):
    data_dir, v1, _ = trained_copy
    rows = (data_dir / CLEANED_CSV).read_text().splitlines()[1:]
    missing = next(line.split(",")[0] for line in rows)
    (data_dir / missing).unlink()  # an image went missing behind the store's back
    job = jobs.run_here(data_dir, "train", tiny_params())
    assert job["status"] == "failed"
    assert "FileNotFoundError" in job["message"]
    assert registry.active_version(data_dir) == v1
    assert [v["version"] for v in registry.versions(data_dir)] == [v1]


@pytest.mark.parametrize("change, message", [
    ({"epochs": "four"}, "frozen epochs must be a whole number, not &#39;four&#39;"),
    ({"lr": "fast"}, "the learning rate must be a number"),
    ({"arch": "vgg99"}, "unknown architecture"),
    ({"epochs": "0", "fine_tune_epochs": "0"}, "train for at least one epoch"),
    ({"bs": "1"}, "the batch size must be between 2 and 1024"),
    ({"size": "4000"}, "the image size must be between 16 and 1024 pixels"),
])
def test_bad_settings_are_refused_before_any_job_starts(app, admin, client, change, message):
    r = client.post("/admin/train", data={**TINY, **change, "csrf_token": admin.csrf_token()})
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert message in page
    assert f'value="{change.get("size", "32")}"' in page  # the form keeps what was typed
    assert jobs.recent(app.config["DATA_DIR"]) == []


def test_the_retrain_form_offers_the_recipes_own_defaults(admin, client):
    d = TrainOptions()
    page = client.get("/admin/").get_data(as_text=True)
    assert f"<option selected>{d.arch}</option>" in page
    for name in ("size", "epochs", "fine_tune_epochs", "bs"):
        assert f'name="{name}" value="{getattr(d, name)}"' in page
    assert d.lr_find_iters is None  # lr_find's budget: its share of the run
    assert 'name="lr_find_iters" value="" placeholder="auto"' in page
    # Submitted as it is, the form asks a job for exactly the recipe's defaults.
    params = forms.params_from_form(forms.form_defaults(),
                                    {"valid_pct": d.valid_pct, "seed": d.seed})
    assert TrainOptions.from_params(params) == replace(d, activate=False)


def test_training_an_empty_dataset_is_refused_on_the_page(app, admin, client):
    r = client.post("/admin/train", data={**TINY, "csrf_token": admin.csrf_token()})
    assert r.status_code == 400
    assert "Not started: cleaned.csv does not exist yet" in r.get_data(as_text=True)


def test_starting_a_training_needs_a_login_and_the_form_token(app, client, admin):
    assert client.post("/admin/train", data=TINY).status_code == 400
    anonymous = app.test_client()
    assert anonymous.post("/admin/train", data=TINY).status_code in (302, 400)
    assert jobs.recent(app.config["DATA_DIR"]) == []


def test_training_reads_cleaned_csv_as_the_store_has_it(trained_copy, monkeypatch):
    """A job killed mid-import leaves cleaned.csv behind the store; training catches it up."""
    data_dir, _, _ = trained_copy
    ds = Dataset(data_dir)
    label = ds.class_names()[0]
    added = ds.add_image(jpeg(tinted(label, random.Random(99))), label=label, write_csv=False)
    path = ds.image(added.image_id)["path"]
    ds.close()
    assert path not in (data_dir / CLEANED_CSV).read_text()  # behind the store
    seen = []

    def refuse_after_reading(data_dir, opts, **kwargs):
        seen.append((Path(data_dir) / CLEANED_CSV).read_text())
        raise training.TrainingRefused("seen enough")

    monkeypatch.setattr(training, "train", refuse_after_reading)
    job = jobs.run_here(data_dir, "train", tiny_params())
    assert job["status"] == "failed" and "seen enough" in job["message"]
    assert path in seen[0]


def field(page, name):
    """Return the value a retrain form's input shows, or its select's chosen option."""
    if f'<select name="{name}">' in page:
        options = page.split(f'<select name="{name}">')[1].split("</select>")[0]
        chosen = options.split(" selected>")[1].split("<")[0]
        return chosen
    return page.split(f'name="{name}" value="')[1].split('"')[0]


def test_the_retrain_form_keeps_the_last_runs_settings_even_when_it_failed(trained_admin,
                                                                           monkeypatch):
    data_dir, _, admin = trained_admin
    monkeypatch.setattr(jobs, "RUNNERS", {**jobs.RUNNERS, "train": "tests.job_kinds:fail"})
    mine = {"arch": "resnet50", "size": "48", "epochs": "3", "fine_tune_epochs": "1",
            "lr": "0.002", "bs": "16", "pretrained": "no", "lr_find_iters": "12"}  # no activate
    r = admin.client.post("/admin/train", data={**mine, "csrf_token": admin.csrf_token()})
    assert r.status_code == 303
    job = wait_for(data_dir, jobs.recent(data_dir, kind="train")[0]["id"])
    assert job["status"] == "failed"

    page = admin.client.get("/admin/").get_data(as_text=True)
    assert f'Settings of the last run (<a href="/jobs/{job["id"]}">job #{job["id"]}</a>, failed)' \
        in page
    assert {name: field(page, name) for name in mine} == {**mine, "pretrained": "no: from scratch"}
    assert 'name="activate" value="1">' in page  # left unticked, as it was
    # The lesson's defaults are a link away.
    page = admin.client.get("/admin/?settings=defaults").get_data(as_text=True)
    assert field(page, "arch") == "resnet34" and field(page, "size") == "224"
    assert "The lesson's defaults." in page


def test_with_no_run_started_the_form_offers_the_active_versions_settings(trained_admin):
    data_dir, v1, admin = trained_admin
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert f"Settings of the active version, <a href=\"/admin/models/{v1}\"><code>{v1}</code>" \
        in page
    options = registry.version_record(data_dir, v1)["metrics"]["options"]  # as conftest trained it
    assert {name: field(page, name) for name in ("arch", "size", "epochs", "fine_tune_epochs",
                                                 "bs", "lr", "pretrained")} == {
        "arch": "resnet18", "size": "32", "epochs": str(options["epochs"]),
        "fine_tune_epochs": str(options["fine_tune_epochs"]), "bs": str(options["bs"]),
        "lr": "auto", "pretrained": "no: from scratch"}


# The session's model, as if it had been timed at 32 px on its 64 pictures: epochs of 1.6 s after
# a slow first one (2.5 s per 100 images per epoch), lr_find 16 batches of 4 in 1.6 s.
TIMED = {"history": [{"phase": "from scratch", "epoch": n, "seconds": s}
                     for n, s in enumerate((7.0, 1.6, 1.6, 1.6))],
         "lr_find": {"from scratch": {"num_it": 16, "ran": 16}},
         "phase_seconds": {"setup": 3.0, "lr_find": 1.6, "from scratch": 11.8, "export": 2.0}}
AS_TIMED = {"arch": "resnet18", "size": "32", "epochs": "2", "fine_tune_epochs": "2", "bs": "4",
            "lr": "auto", "pretrained": "no"}


def test_the_estimate_scales_this_machines_timed_run_by_size_and_says_its_basis(trained_admin):
    data_dir, v1, admin = trained_admin
    registry.update_metrics(data_dir, v1, **TIMED)
    same = admin.client.get("/admin/estimate.json", query_string=AS_TIMED).get_json()
    assert [(p["name"], p["seconds"]) for p in same["phases"]] == [
        ("lr_find", 1.6), ("from scratch", 6.4), ("setup and export", 5.0)]  # 4 epochs × 1.6 s
    assert same["total_seconds"] == 13.0 and same["total"] == "about 13 s"
    assert same["basis"] == (
        f"From your run {v1} (resnet18 at 32 px from scratch, 64 images): 2.5 s per 100 images "
        "per epoch (from scratch), lr_find 2.5 s per 100 images. A rough guide: on a busy "
        "machine a run takes longer.")

    bigger = admin.client.get("/admin/estimate.json",
                              query_string={**AS_TIMED, "size": "64"}).get_json()
    assert [(p["name"], p["seconds"]) for p in bigger["phases"]] == [
        ("lr_find", 6.4), ("from scratch", 25.6), ("setup and export", 11.0)]  # 4× the pixels
    assert "; scaled by (64/32)² for the size, 4× in all." in bigger["basis"]
    # The page shows the same before Start.
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert "What this run will cost here" in page and same["basis"] in page

    refused = admin.client.get("/admin/estimate.json", query_string={**AS_TIMED, "size": "9"})
    assert refused.status_code == 400
    assert refused.get_json() == {
        "error": "No estimate: the image size must be between 16 and 1024 pixels."}
    assert admin.client.application.test_client().get("/admin/estimate.json").status_code == 401


def test_the_form_says_before_start_when_there_are_no_imagenet_weights(admin, client,
                                                                        monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache; and offline
    page = client.get("/admin/").get_data(as_text=True)
    assert ('<p class="weights-note warning" data-weights-note>No ImageNet weights for resnet34 '
            "on this machine: this run trains from scratch — expect more epochs and a higher "
            "learning rate") in page
    other = client.get("/admin/estimate.json", query_string={"arch": "resnet50"}).get_json()
    assert other["from_scratch"] and other["weights"]["warning"]
    assert other["weights"]["note"].startswith("No ImageNet weights for resnet50 on this machine")
    assert other["basis"] == "No estimate yet: label some images first."
