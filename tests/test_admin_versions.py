"""Model versions from the admin page: the report, activate, roll back, downloads."""
import csv
import io
import random
import re
import zipfile

import pytest

from tests.conftest import AdminSession, make_app
from tests.pictures import jpeg, tinted
from tests.test_app import second_version
from webapp.dataset.manifest import CLEANED_CSV
from webapp.dataset.store import Dataset
from webapp.model import registry, report


@pytest.fixture
def site(trained_copy, monkeypatch):
    """An admin on a serving app (the model loaded) over a copy of the trained data dir."""
    data_dir, v1, _ = trained_copy
    app = make_app(data_dir, LOAD_MODEL=True)
    monkeypatch.setattr(type(app.extensions["winnow.model"]), "CHECK_EVERY", 0.0)
    admin = AdminSession(app.test_client())
    admin.login()
    return data_dir, v1, admin


def served(client):
    picture = jpeg(tinted("red", random.Random(3), 48))
    r = client.post("/api/classify", data=picture, content_type="image/jpeg")
    assert r.status_code == 200
    return r.get_json()["model"]


def post(admin, path, **data):
    return admin.client.post(path, data={**data, "csrf_token": admin.csrf_token()})


def test_an_admin_switches_versions_and_rolls_back_step_by_step(site):
    data_dir, v1, admin = site
    v2, v3 = second_version(data_dir, v1), second_version(data_dir, v1)
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert "Roll back" not in page  # v1 is the only version ever served
    assert post(admin, f"/admin/models/{v2}/activate").status_code == 303
    assert served(admin.client) == v2
    assert post(admin, f"/admin/models/{v3}/activate").status_code == 303
    assert served(admin.client) == v3
    assert f"Roll back to {v2}" in admin.client.get("/admin/").get_data(as_text=True)

    r = post(admin, "/admin/rollback")
    assert r.status_code == 303 and r.location.endswith("/admin/#versions")
    assert served(admin.client) == v2
    post(admin, "/admin/rollback")
    assert served(admin.client) == v1
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert f"Rolled back: model {v1} is active again" in page
    assert "Roll back to" not in page  # nothing was served before v1
    post(admin, "/admin/rollback")
    assert "there is no earlier model version to roll back to" in admin.client.get(
        "/admin/").get_data(as_text=True)
    assert [e["kind"] for e in registry.activations(data_dir)] == [
        "activate", "activate", "activate", "rollback", "rollback"]


def test_the_versions_list_shows_what_each_version_is(site):
    data_dir, v1, admin = site
    page = admin.client.get("/admin/").get_data(as_text=True)
    row = page[page.index(f'data-version="{v1}"'):].split("</tr>")[0]
    assert "<strong>active</strong>" in row and "resnet18" in row and ">64<" in row
    assert "no (from scratch)" in row
    for name in ("export.pkl", "model.onnx", "cleaned.csv", "dataset.zip"):
        assert f"/admin/models/{v1}/{name}" in row


def test_the_report_reads_like_the_lesson(site):
    data_dir, v1, admin = site
    page = admin.client.get(f"/admin/models/{v1}").get_data(as_text=True)
    assert "Diagnosis" in page and "The lesson's advice:" in page
    assert ("<th>epoch</th><th>train_loss</th><th>valid_loss</th><th>error_rate</th><th>time</th>"
            in page)
    lr = registry.version_record(data_dir, v1)["metrics"]["lr"]
    # From scratch: nothing frozen, one cycle, and the page says which recipe ran.
    assert f"fit_one_cycle(4, {lr:.1e}), the whole network from random weights" in page
    assert "unfreeze()" not in page
    assert ("Recipe: from scratch (no ImageNet weights): the whole network, "
            f"4 epochs at lr {lr:.1e}") in page
    assert "trained from scratch (no ImageNet weights)" in page
    # Where the time went, lr_find's share among the phases.
    assert "Where the time went" in page
    for phase in ("setup", "lr_find", "from scratch", "export"):
        assert f"<tr><td>{phase}</td><td>" in page
    assert re.search(r"lr_find ran \d+ of at most 16 iterations before the from scratch stage",
                     page)
    assert f'href="/clean/?actual=blue&amp;predicted=red&amp;version={v1}"' in page
    assert "64 images scored" not in page  # the fixture's version was never scored
    for name in ("losses", "lr_find", "confusion"):
        r = admin.client.get(f"/admin/models/{v1}/plots/{name}.svg")
        assert r.status_code == 200 and r.mimetype == "image/svg+xml"
        assert r.get_data(as_text=True).lstrip().startswith("<?xml")
    lr_plot = admin.client.get(f"/admin/models/{v1}/plots/lr_find.svg").get_data(as_text=True)
    assert "valley" in lr_plot and f"used: {lr:.1e}" in lr_plot
    assert admin.client.get(f"/admin/models/{v1}/plots/nonsense.svg").status_code == 404
    assert admin.client.get("/admin/models/19990101-000000").status_code == 404


def test_label_changes_since_the_active_model_was_trained_are_counted(site):
    data_dir, v1, admin = site
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert "retraining would see the same data" in page
    ds = Dataset(data_dir)
    first, second = ds.labeled()[:2]
    ds.change("relabel", image_id=first["id"], label="blue" if first["label"] == "red" else "red")
    ds.change("delete", image_id=second["id"])
    ds.close()
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert "1 relabelled, 0 added, 1 removed" in page


def test_downloads_give_the_files_the_version_was_made_from(site):
    data_dir, v1, admin = site
    vdir = registry.models_dir(data_dir) / v1
    for name in ("export.pkl", "model.onnx", "cleaned.csv"):
        r = admin.client.get(f"/admin/models/{v1}/{name}")
        path = report.version_file(data_dir, v1, name)  # the ONNX model is in the bundle
        assert r.status_code == 200 and r.data == path.read_bytes()
        assert f"{v1}-{name}" in r.headers["Content-Disposition"]

    ds = Dataset(data_dir)
    gone = ds.labeled()[0]
    ds.change("delete", image_id=gone["id"])  # deleted since: the version's zip still has it
    ds.close()
    r = admin.client.get(f"/admin/models/{v1}/dataset.zip")
    assert r.mimetype == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(r.data))
    rows = list(csv.DictReader(io.StringIO(zf.read(CLEANED_CSV).decode())))
    trained_on = list(csv.DictReader(open(vdir / CLEANED_CSV)))
    assert len(rows) == len(trained_on) == 64
    assert {r["name"].split("/")[0] for r in rows} == {"blue", "red"}
    assert all(r["name"].split("/")[0] == r["label"] for r in rows)
    assert sorted(n for n in zf.namelist() if n != CLEANED_CSV) == sorted(r["name"] for r in rows)
    today = zipfile.ZipFile(io.BytesIO(admin.client.get("/admin/dataset.zip").data))
    assert len(today.namelist()) == 64  # 63 images and cleaned.csv


def test_unknown_versions_and_missing_files_are_404(site):
    data_dir, v1, admin = site
    v2 = second_version(data_dir, v1)  # a copy: no model.onnx, no cleaned.csv
    assert admin.client.get(f"/admin/models/{v2}/model.onnx").status_code == 404
    assert admin.client.get(f"/admin/models/{v2}/dataset.zip").status_code == 404
    assert admin.client.get("/admin/models/nope/export.pkl").status_code == 404
    assert admin.client.get(f"/admin/models/{v1}/metrics.json").status_code == 404
    r = post(admin, "/admin/models/nope/activate")
    assert r.status_code == 303 and registry.active_version(data_dir) == v1


def test_version_pages_need_a_login_and_switches_need_the_form_token(site):
    data_dir, v1, admin = site
    v2 = second_version(data_dir, v1)
    assert admin.client.post(f"/admin/models/{v2}/activate").status_code == 400
    assert admin.client.post("/admin/rollback").status_code == 400
    assert registry.active_version(data_dir) == v1
    anonymous = make_app(data_dir).test_client()
    for path in (f"/admin/models/{v1}", f"/admin/models/{v1}/export.pkl", "/admin/dataset.zip",
                 f"/admin/models/{v1}/plots/losses.svg", "/admin/models/import"):
        assert anonymous.get(path).status_code == 302


DRAW_TOGETHER = """
import json, sys, threading
from webapp.model import report
data_dir, version = sys.argv[1:]
errors = []
def draw(name):
    try:
        report.plot_svg(data_dir, version, name)
    except Exception as e:
        errors.append(f"{name}: {type(e).__name__}: {e}")
threads = [threading.Thread(target=draw, args=(n,)) for n in report.PLOTS for _ in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps({"errors": errors, "matplotlib_was_loaded": "matplotlib" in sys.modules}))
"""


def test_a_fresh_worker_draws_several_plots_at_once(trained_copy):
    """A worker serving with the runtime has not imported matplotlib: the report's plots, asked
    for together by the page, import it in several threads at once."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    data_dir, version, _ = trained_copy
    run = subprocess.run([sys.executable, "-c", DRAW_TOGETHER, str(data_dir), version],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                         text=True, timeout=120, check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["errors"] == [] and out["matplotlib_was_loaded"]
    assert all((registry.models_dir(data_dir) / version / "plots" / f"{n}.svg").is_file()
               for n in report.PLOTS)
