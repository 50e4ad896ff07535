"""Bring a notebook model: a plain fastai export.pkl is checked in another process, given its
serving bundle (checked there and again here), recorded by an "import" job, then served."""
import io
import json
import random
import shutil
import sys
import time

import numpy as np
import pytest

from tests.conftest import AdminSession, make_app
from tests.pictures import jpeg, tinted, tinted_set
from tests.test_jobs import wait_for
from webapp.core import db, processes
from webapp.core.files import file_sha256
from webapp.dataset.store import Dataset
from webapp.ingest.uploads import STAGING
from webapp.jobs import runner as jobs
from webapp.model import bundle, notebook_import, registry, serving, training
from webapp.runtime import bundle as rt

JOB_SECONDS = 180  # an import of the tiny model takes ~10 s; a loaded CI machine, more


@pytest.fixture(scope="module")
def notebook_export(tmp_path_factory):
    """An export.pkl made as a lesson notebook makes it: from_folder, vision_learner, export."""
    from fastai.vision.all import ImageDataLoaders, Resize, error_rate, resnet18, vision_learner

    root = tmp_path_factory.mktemp("notebook")
    for i, (label, data) in enumerate(tinted_set(per_class=8)):
        (root / "pictures" / label).mkdir(parents=True, exist_ok=True)
        (root / "pictures" / label / f"{i}.jpg").write_bytes(data)
    dls = ImageDataLoaders.from_folder(root / "pictures", valid_pct=0.25, seed=1,
                                       item_tfms=Resize(32), bs=4, num_workers=0)
    learn = vision_learner(dls, resnet18, metrics=error_rate, pretrained=False)
    learn.export(root / "export.pkl")
    return root / "export.pkl"


@pytest.fixture(scope="module")
def labelled_template(tmp_path_factory):
    """A data dir with labelled pictures of the model's two classes and one it does not know."""
    data_dir = tmp_path_factory.mktemp("labelled") / "data"
    ds = Dataset(data_dir, valid_pct=0.5)
    for label, data in tinted_set(per_class=12, seed=5):
        ds.add_image(data, label=label, source="test", write_csv=False)
    rng = random.Random(9)
    for _ in range(4):  # a class of this site that the notebook model never saw
        ds.add_image(jpeg(tinted("red", rng).rotate(90)), label="green", source="test",
                     write_csv=False)
    ds.write_cleaned_csv()
    ds.close()
    return data_dir


@pytest.fixture
def labelled_dir(labelled_template, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(labelled_template, dst)
    return dst


@pytest.fixture(scope="module")
def imported(labelled_template, notebook_export, tmp_path_factory):
    """The notebook model imported by an import job (in the foreground) into a labelled dir."""
    data_dir = tmp_path_factory.mktemp("imported") / "data"
    shutil.copytree(labelled_template, data_dir)
    job = run_import(data_dir, notebook_export, "pets export.pkl")
    assert job["status"] == "succeeded", jobs.read_log(data_dir, job["id"])
    return data_dir, job


def run_import(data_dir, export, filename="export.pkl"):
    with open(export, "rb") as f:
        token = notebook_import.stage(data_dir, f)
    return jobs.run_here(data_dir, "import", notebook_import.job_params(token, filename))


def model_dirs(data_dir):
    root = registry.models_dir(data_dir)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def staged(data_dir):
    return sorted((data_dir / STAGING).glob(notebook_import.PREFIX + "*"))


def test_an_import_job_records_the_model_with_a_ready_serving_bundle(imported, notebook_export):
    from fastai.learner import load_learner

    data_dir, job = imported
    version = job["result"]["version"]
    assert job["phase"] == "registering" and job["result"]["bundle"] == "ready"
    assert job["message"].startswith(f"Imported pets export.pkl as model {version} (2 classes: "
                                     "blue, red). Serving bundle ready")
    record = registry.version_record(data_dir, version)
    assert record["source"] == "imported" and record["arch"] == "resnet18" and record["size"] == 32
    prov = record["metrics"]["provenance"]
    assert prov["sha256"] == record["sha256"] == file_sha256(notebook_export)
    assert prov["filename"] == "pets export.pkl" and prov["classes"] == ["blue", "red"]
    check = record["metrics"]["check"]
    assert check["input_size"] == [32, 32] and check["max_abs_diff"] <= 1e-4

    info = record["metrics"]["bundle"]
    folder = bundle.bundle_dir(registry.models_dir(data_dir) / version)
    assert info["status"] == "ready" and info["sha256"] == file_sha256(folder / rt.MANIFEST)
    assert {p.name for p in folder.iterdir()} <= {rt.MANIFEST, rt.FP32, rt.INT8, rt.REFERENCE}
    assert (folder / rt.FP32).is_file() and (folder / rt.REFERENCE).is_file()
    assert info["fp32"]["max_abs_diff"] <= 1e-4 and info["load_check"]["fp32_max_abs_diff"] <= 1e-4
    # Checked on the data dir's validation pictures; INT8 only on those of the model's classes.
    rows = training.read_manifest(data_dir)
    valid = [r for r in rows if r["is_valid"] == "True"]
    assert info["fp32"]["checked_on"] == len(valid)
    assert info["int8"]["checked_on"] == len([r for r in valid if r["label"] != "green"])
    assert json.loads((folder / rt.MANIFEST).read_text())["vocab"] == ["blue", "red"]
    assert registry.active_version(data_dir) is None  # imported is not served yet
    assert not staged(data_dir)  # the upload is gone from incoming/

    predictor = serving.load_served(data_dir, version, precision="fp32")
    assert predictor.runtime == "onnx" and predictor.precision == "fp32"
    learn = load_learner(notebook_export, cpu=True)
    picture = tinted("blue", random.Random(11), 40)
    with learn.no_bar():
        theirs = learn.predict(picture)[2].numpy()
    assert np.abs(predictor.probabilities([picture])[0] - theirs).max() <= 1e-4
    auto = serving.load_served(data_dir, version)
    assert auto.runtime == "onnx" and auto.precision == ("int8" if info["int8"]["passed"]
                                                          else "fp32")


def test_an_import_into_an_empty_data_dir_checks_the_bundle_on_generated_pictures(
        tmp_path, notebook_export, capsys):
    data_dir = tmp_path / "data"
    job = run_import(data_dir, notebook_export)
    assert job["status"] == "succeeded", jobs.read_log(data_dir, job["id"])
    version = job["result"]["version"]
    info = registry.version_record(data_dir, version)["metrics"]["bundle"]
    assert info["status"] == "ready"
    assert info["fp32"]["checked_on"] == notebook_import.N_GENERATED
    assert info["int8"]["passed"] is False and "labelled" in info["int8"]["reason"]
    assert "INT8 not served: no labelled validation pictures" in job["message"]
    served = serving.load_served(data_dir, version)
    assert served.runtime == "onnx" and served.precision == "fp32"
    assert "No pictures in the data dir" in capsys.readouterr().out  # the job's log


# The real checker, then a lie about what it left in ./bundle (run as `python -c LIAR MODE ...`).
LIAR = """
import encodings.cp437, hashlib, json, sys  # np.load's zip names: nobody may not reach it later
from pathlib import Path
import numpy as np
from webapp.core import sandbox
from webapp.model import notebook_import as ni

mode, export, listing = sys.argv[1:4]
ni._import_libraries()
sandbox.drop_privileges()
learn = ni.load(export)
check = ni.inspect(learn)
ni._say({"check": check})
record = ni.build_bundle(learn, check, listing)
folder = Path("bundle")
sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
if mode == "sha":  # bundle.json changed after its sha256 was taken
    (folder / "bundle.json").write_text((folder / "bundle.json").read_text() + " ")
elif mode == "reference":  # a bundle that holds together, but whose outputs are not its model's
    with np.load(folder / "reference.npz") as ref:
        arrays = {k: ref[k] for k in ref.files}
    arrays["fp32"] = arrays["fp32"] + 0.01
    np.savez_compressed(folder / "reference.npz", **arrays)
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["files"]["reference.npz"] = sha(folder / "reference.npz")
    (folder / "bundle.json").write_text(json.dumps(manifest))
    record["sha256"] = sha(folder / "bundle.json")
elif mode == "garbage":
    record = {"status": "ready", "fp32": "fine", "sha256": "../../etc/passwd"}
ni._say({"bundle": record})
"""


@pytest.mark.parametrize("lie, reason", [
    ("sha", "bundle.json does not match the sha256 the checker reported"),
    ("reference", "fp32 probabilities differ"),
    ("garbage", "the checker's account of the bundle does not hold together"),
])
def test_a_checker_that_lies_about_its_bundle_leaves_it_refused_and_fastai_serving(
        labelled_dir, notebook_export, monkeypatch, lie, reason):
    def liar(module, *args):
        assert module == notebook_import.MODULE
        return [sys.executable, "-c", LIAR, lie, *map(str, args)]

    monkeypatch.setattr(processes, "module_command", liar)
    with open(notebook_export, "rb") as f:
        token = notebook_import.stage(labelled_dir, f)
    version, check, record = notebook_import.import_staged(labelled_dir, token, "export.pkl")

    info = registry.version_record(labelled_dir, version)["metrics"]["bundle"]
    assert info == record and info["status"] == "refused" and reason in info["reason"]
    assert "sha256" not in info
    assert not bundle.bundle_dir(registry.models_dir(labelled_dir) / version).exists()
    served = serving.load_served(labelled_dir, version)
    assert served.runtime == "fastai" and "its serving bundle was refused" in served.note
    assert check["classes"] == ["blue", "red"] and not staged(labelled_dir)


def test_a_torch_file_that_is_not_a_learner_fails_its_import_job_and_nothing_is_kept(tmp_path):
    import torch

    data_dir = tmp_path / "data"
    path = tmp_path / "weights.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    job = run_import(data_dir, path)
    assert job["status"] == "failed"
    assert job["message"].startswith("ImportRefused: this file is not a fastai image classifier "
                                     "Winnow can serve")
    assert model_dirs(data_dir) == [] and registry.versions(data_dir) == []
    assert not staged(data_dir)


def test_cancel_stops_the_checker_at_once_and_keeps_nothing(tmp_path, notebook_export):
    data_dir = tmp_path / "data"
    with open(notebook_export, "rb") as f:
        token = notebook_import.stage(data_dir, f)
    job_id = jobs.start(data_dir, "import", notebook_import.job_params(token, "export.pkl"))
    deadline = time.monotonic() + JOB_SECONDS
    while "checker:" not in jobs.read_log(data_dir, job_id):  # the checker is running
        assert time.monotonic() < deadline and jobs.get(data_dir, job_id)["status"] in jobs.ACTIVE
        time.sleep(0.1)
    assert jobs.cancel(data_dir, job_id)
    job = wait_for(data_dir, job_id, timeout=jobs.CANCEL_GRACE_SECONDS)  # no SIGTERM needed
    assert job["status"] == "cancelled", jobs.read_log(data_dir, job_id)
    assert job["message"] == "Cancelled; nothing it had finished was lost."
    assert model_dirs(data_dir) == [] and not staged(data_dir)


# ---- the web pages ------------------------------------------------------------------------

@pytest.fixture
def site(labelled_dir, monkeypatch):
    """An admin on a serving app over a labelled data dir with no model yet."""
    app = make_app(labelled_dir, LOAD_MODEL=True)
    monkeypatch.setattr(type(app.extensions["winnow.model"]), "CHECK_EVERY", 0.0)
    admin = AdminSession(app.test_client())
    assert admin.login().status_code == 302
    return labelled_dir, admin


def upload(admin, data, name="export.pkl"):
    return admin.client.post("/admin/models/import", content_type="multipart/form-data",
                             data={"file": (io.BytesIO(data), name),
                                   "csrf_token": admin.csrf_token()})


def post(admin, path, **data):
    return admin.client.post(path, data={**data, "csrf_token": admin.csrf_token()})


def served(client):
    picture = jpeg(tinted("red", random.Random(3), 48))
    r = client.post("/api/classify", data=picture, content_type="image/jpeg")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["model"]


def test_the_import_form_starts_a_job_whose_page_links_the_new_model(site, notebook_export):
    data_dir, admin = site
    page = admin.client.get("/admin/models/import").get_data(as_text=True)
    assert "Only upload a file from a source you trust." in page and "pickle" in page
    assert "serving bundle" in page and "runs as a job" in page

    r = upload(admin, notebook_export.read_bytes(), "pets export.pkl")
    assert r.status_code == 303, r.get_data(as_text=True)
    assert r.location.startswith("/jobs/")
    job_id = int(r.location.rsplit("/", 1)[-1])
    job = wait_for(data_dir, job_id, timeout=JOB_SECONDS)
    assert job["status"] == "succeeded", jobs.read_log(data_dir, job_id)
    version = job["result"]["version"]

    page = admin.client.get(r.location).get_data(as_text=True)
    assert f"Importing pets export.pkl as job #{job_id}" in page  # the flash
    assert f'href="/admin/models/{version}"' in page and "read its report" in page
    assert "Serving bundle ready" in page and "checker:" in page  # the message; the child's log
    report = admin.client.get(f"/admin/models/{version}").get_data(as_text=True)
    assert "pets export.pkl" in report and "checked in a separate process" in report
    assert version in admin.client.get("/admin/").get_data(as_text=True)

    assert post(admin, f"/admin/models/{version}/activate").status_code == 303
    assert served(admin.client) == version
    assert registry.version_record(data_dir, version)["metrics"]["bundle"]["status"] == "ready"


@pytest.mark.parametrize("data, message", [
    (b"", "Not imported: the uploaded file is empty."),
    (b"this is not a pickle at all",
     "Not imported: this is not a fastai export.pkl: it is neither a pickle nor a torch archive."),
])
def test_an_empty_file_or_one_that_is_no_pickle_is_refused_with_400_and_no_job(
        site, data, message):
    data_dir, admin = site
    r = upload(admin, data)
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert message in page and 'id="import-form"' in page  # the form, to try again
    assert jobs.recent(data_dir) == [] and model_dirs(data_dir) == [] and not staged(data_dir)


def test_an_upload_needs_a_file_and_the_form_token(site):
    data_dir, admin = site
    r = admin.client.post("/admin/models/import", content_type="multipart/form-data",
                          data={"file": (io.BytesIO(b"x"), "export.pkl")})
    assert r.status_code == 400 and "security token" in r.get_data(as_text=True)
    r = admin.client.post("/admin/models/import", data={"csrf_token": admin.csrf_token()})
    assert r.status_code == 400 and "Choose an export.pkl file." in r.get_data(as_text=True)
    assert jobs.recent(data_dir) == []


def test_an_import_waits_for_a_running_model_job_with_409(site, notebook_export):
    data_dir, admin = site
    with db.session(data_dir) as conn:
        train_id = jobs.create(conn, "train", {})
    r = upload(admin, notebook_export.read_bytes())
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert f"Not started: A train job (#{train_id}) is running" in page
    assert f'href="/jobs/{train_id}"' in page and 'id="import-form"' in page
    assert not staged(data_dir) and model_dirs(data_dir) == []
    assert [j["kind"] for j in jobs.recent(data_dir)] == ["train"]
