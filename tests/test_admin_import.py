"""Bring a notebook model: a plain fastai export.pkl is checked in another process, then served."""
import io

import pytest

from tests import test_admin_versions
from tests.pictures import tinted_set
from tests.test_admin_versions import post, served
from webapp.core.files import file_sha256
from webapp.model import registry

site = test_admin_versions.site  # the fixture: an admin on a served model


@pytest.fixture(scope="module")
def notebook_export(tmp_path_factory):
    """An export.pkl made as a lesson notebook makes it: from_folder, vision_learner, export."""
    from fastai.vision.all import ImageDataLoaders, Resize, error_rate, resnet18, vision_learner

    root = tmp_path_factory.mktemp("notebook")
    for i, (label, data) in enumerate(tinted_set(per_class=8)):
        (root / "pictures" / label).mkdir(parents=True, exist_ok=True)
        (root / "pictures" / label / f"{i}.jpg").write_bytes(data)
    dls = ImageDataLoaders.from_folder(root / "pictures", valid_pct=0.25, seed=1,
                                       item_tfms=Resize(48), bs=4, num_workers=0)
    learn = vision_learner(dls, resnet18, metrics=error_rate, pretrained=False)
    learn.export(root / "export.pkl")
    return root / "export.pkl"


def upload(admin, data, name="export.pkl"):
    return admin.client.post("/admin/models/import", content_type="multipart/form-data",
                             data={"file": (io.BytesIO(data), name),
                                   "csrf_token": admin.csrf_token()})


def model_dirs(data_dir):
    return sorted(p.name for p in registry.models_dir(data_dir).iterdir() if p.is_dir())


def test_a_notebook_model_is_checked_recorded_and_served_once_activated(site, notebook_export):
    data_dir, v1, admin = site
    page = admin.client.get("/admin/models/import").get_data(as_text=True)
    assert "Only upload a file from a source you trust." in page and "pickle" in page

    r = upload(admin, notebook_export.read_bytes(), "pets export.pkl")
    assert r.status_code == 303, r.get_data(as_text=True)
    version = r.location.rsplit("/", 1)[-1]
    record = registry.version_record(data_dir, version)
    assert record["source"] == "imported" and record["arch"] == "resnet18" and record["size"] == 48
    prov = record["metrics"]["provenance"]
    assert prov["sha256"] == record["sha256"] == file_sha256(notebook_export)
    assert prov["filename"] == "pets export.pkl" and prov["classes"] == ["blue", "red"]
    check = record["metrics"]["check"]
    assert check["input_size"] == [48, 48] and check["max_abs_diff"] <= 1e-4
    assert check["test_prediction"]["label"] in ("blue", "red")
    assert registry.active_version(data_dir) == v1  # imported is not served yet

    report = admin.client.get(r.location).get_data(as_text=True)
    assert "Imported pets export.pkl as model" in report
    assert "checked in a separate process" in report and "No epochs recorded" in report
    assert post(admin, f"/admin/models/{version}/activate").status_code == 303
    assert served(admin.client) == version


def test_a_file_that_is_not_a_fastai_learner_is_refused_and_nothing_is_kept(site):
    data_dir, v1, admin = site
    before = model_dirs(data_dir)
    r = upload(admin, b"this is not a pickle at all")
    assert r.status_code == 400
    assert "Not imported: this file is not a fastai image classifier Winnow can serve" in \
        r.get_data(as_text=True)
    assert model_dirs(data_dir) == before
    assert [v["version"] for v in registry.versions(data_dir)] == [v1]


def test_an_upload_needs_a_file_and_the_form_token(site):
    data_dir, _, admin = site
    r = admin.client.post("/admin/models/import", content_type="multipart/form-data",
                          data={"file": (io.BytesIO(b"x"), "export.pkl")})
    assert r.status_code == 400 and "security token" in r.get_data(as_text=True)
    r = admin.client.post("/admin/models/import", data={"csrf_token": admin.csrf_token()})
    assert r.status_code == 400 and "Choose an export.pkl file." in r.get_data(as_text=True)
